"""The review page's inline style and script (kept apart from the Python that writes it)."""

from __future__ import annotations

CSS = """
:root{--bg:#15171c;--card:#1f2229;--fg:#e6e6e6;--dim:#9aa0aa;--line:#30343d;
--ok:#3fb950;--bad:#f85149;--busy:#d29922;--wait:#6e7681}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{position:sticky;top:0;z-index:2;background:var(--bg);padding:.6rem 1rem;
border-bottom:1px solid var(--line)}
h1{margin:0 0 .2rem;font-size:1.3rem}h1 small,h2 small{color:var(--dim);font-weight:normal}
.summary{margin:.15rem 0;color:var(--dim)}code{color:var(--fg)}
form{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;margin-top:.4rem}
select,input{background:var(--card);color:var(--fg);border:1px solid var(--line);
border-radius:4px;padding:.2rem .3rem;max-width:18rem}
.shown{color:var(--dim)}
main{padding:0 1rem 2rem}
.group{border-bottom:1px solid var(--line);padding:.6rem 0}
h2{font-size:1.05rem;margin:.2rem 0 .5rem}
.row{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:.7rem}
.source,.job{background:var(--card);border:1px solid var(--line);border-radius:6px;
margin:0;overflow:hidden;display:flex;flex-direction:column}
.source{border-color:#58a6ff}
figcaption{padding:.3rem .5rem;color:var(--dim)}
video,img{display:block;width:100%;aspect-ratio:16/9;object-fit:contain;background:#000}
.placeholder{aspect-ratio:16/9;display:flex;align-items:center;justify-content:center;
color:var(--dim);background:#0d0f12}
.meta{padding:.4rem .55rem}.meta p{margin:.2rem 0}
.prompt{color:var(--dim);display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;
overflow:hidden}
.prompt:hover{-webkit-line-clamp:unset}
.params{display:grid;grid-template-columns:auto 1fr;gap:0 .5rem;margin:.2rem 0;font-size:12px}
.params dt{color:var(--dim)}.params dd{margin:0;overflow-wrap:anywhere}
.cost,.files{font-size:12px;color:var(--dim)}.rid{font-family:monospace}
.error{color:var(--bad);overflow-wrap:anywhere}.missing{color:var(--bad);padding:.5rem}
.files a{overflow-wrap:anywhere}
a{color:#58a6ff}.file{display:block;padding:1rem;overflow-wrap:anywhere}
.endpoint{color:var(--dim);font-size:12px}
.badge{display:inline-block;border-radius:3px;padding:0 .35rem;font-size:12px;
background:var(--wait);color:#fff}
.s-done .badge,.badge.s-done{background:var(--ok)}
.s-failed .badge,.badge.s-failed,.s-cancelled .badge,.badge.s-cancelled{background:var(--bad)}
.s-running .badge,.badge.s-running,.s-queued .badge,.badge.s-queued,.s-submitting .badge,
.badge.s-submitting,.s-completed .badge,.badge.s-completed{background:var(--busy)}
.job.s-failed,.job.s-cancelled{border-color:var(--bad)}
.job{content-visibility:auto;contain-intrinsic-size:auto 400px}
[hidden]{display:none!important}
#empty{padding:2rem;color:var(--dim)}
"""

JS = """
(() => {
  const cards = Array.from(document.querySelectorAll('article.job'));
  const groups = Array.from(document.querySelectorAll('section.group'));
  const filters = {
    prompt: document.getElementById('f-prompt'),
    endpoint: document.getElementById('f-endpoint'),
    status: document.getElementById('f-status'),
    text: document.getElementById('f-text'),
  };
  const shown = document.getElementById('shown');
  const empty = document.getElementById('empty');
  function apply() {
    const p = filters.prompt.value, e = filters.endpoint.value, s = filters.status.value;
    const q = filters.text.value.trim().toLowerCase();
    let n = 0;
    for (const card of cards) {
      const d = card.dataset;
      const ok = (!p || d.prompt === p) && (!e || d.endpoint === e) &&
        (!s || d.status === s) && (!q || d.search.includes(q));
      card.hidden = !ok;
      if (ok) n++;
    }
    for (const group of groups) {
      group.hidden = !group.querySelector('article.job:not([hidden])');
    }
    shown.textContent = String(n);
    empty.hidden = n > 0;
    const state = new URLSearchParams();
    for (const [name, el] of Object.entries(filters)) if (el.value) state.set(name, el.value);
    try {
      // Keeps the filters in the address, so a view can be bookmarked or shared.
      history.replaceState(null, '', state.toString() ? '#' + state : location.pathname);
    } catch (err) { /* some browsers refuse this on file:// pages; filters still work */ }
  }
  const saved = new URLSearchParams(location.hash.slice(1));
  for (const [name, el] of Object.entries(filters)) {
    const value = saved.get(name);
    if (value !== null && (el.tagName !== 'SELECT' ||
        Array.from(el.options).some((o) => o.value === value))) el.value = value;
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  }
  if (saved.toString()) apply();
  const lazy = document.querySelectorAll('video[data-lazy]');
  const wake = (video) => {
    if (video.dataset.poster) video.poster = video.dataset.poster;
    video.removeAttribute('data-lazy');
    video.preload = 'metadata';
    video.load();
  };
  if ('IntersectionObserver' in window) {
    const io = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) { io.unobserve(entry.target); wake(entry.target); }
      }
    }, {rootMargin: '800px 0px'});
    lazy.forEach((video) => io.observe(video));
  } else {
    lazy.forEach(wake);
  }
})();
"""
