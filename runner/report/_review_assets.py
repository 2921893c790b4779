"""The review page's style and script, inlined into every page (no network).

The script filters (kept in the address), moves over the cards a person judges (j/k),
loads media as they near the screen, and, on a page ``raybatch review`` serves (it
carries a ``raybatch-token`` meta tag), sends verdicts, notes and rerolls with that token
and follows the state every few seconds. It logs nothing: failures show in the header.
"""

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
.job.look{border-style:dashed}
.role{font-size:11px;border:1px solid var(--line);border-radius:3px;padding:0 .3rem;
color:var(--dim)}
.verdict{margin:.3rem 0 .1rem}
.vbadge{display:inline-block;border-radius:3px;padding:0 .4rem;font-size:12px;
border:1px solid var(--line);color:var(--dim)}
.vbadge.v-approved{background:var(--ok);color:#fff;border-color:var(--ok)}
.vbadge.v-rejected{background:var(--bad);color:#fff;border-color:var(--bad)}
.vbadge:empty{display:none}
.rolled{margin-left:.5rem;font-size:12px;color:var(--dim)}
.note{color:#e3b341;font-size:13px;overflow-wrap:anywhere;white-space:pre-wrap}
.judge{display:flex;flex-wrap:wrap;gap:.3rem;margin-top:.3rem}
.judge button{background:var(--card);color:var(--fg);border:1px solid var(--line);
border-radius:4px;padding:.15rem .5rem;cursor:pointer;font:inherit;font-size:12px}
.judge button:hover,.judge button:focus{border-color:#58a6ff}
.job:not([data-reroll]) [data-act="reroll"],.job:not([data-verdict="rejected"]) [data-act="reroll"]
{display:none}
.job[data-status]:not([data-status="done"]) .judge{display:none}
.job[data-verdict="approved"]{border-color:var(--ok)}
.job[data-verdict="rejected"]{border-color:var(--bad)}
.job.current{outline:3px solid #58a6ff;outline-offset:1px}
.notebox{width:100%;min-height:4rem;margin-top:.3rem;background:var(--bg);color:var(--fg);
border:1px solid var(--line);border-radius:4px;font:inherit}
.keys{color:var(--dim);font-size:12px}
#message{margin:.3rem 0 0;color:#e3b341}
#message button{margin-left:.5rem}
"""

JS = """
(() => {
  const tokenMeta = document.querySelector('meta[name="raybatch-token"]');
  const token = tokenMeta ? tokenMeta.content : null;
  const cards = Array.from(document.querySelectorAll('article.job'));
  const byKey = new Map(cards.map((c) => [c.dataset.key, c]));
  const groups = Array.from(document.querySelectorAll('section.group'));
  const filters = {
    prompt: document.getElementById('f-prompt'),
    endpoint: document.getElementById('f-endpoint'),
    status: document.getElementById('f-status'),
    verdict: document.getElementById('f-verdict'),
    text: document.getElementById('f-text'),
  };
  const shown = document.getElementById('shown');
  const empty = document.getElementById('empty');
  const message = document.getElementById('message');
  document.getElementById('filters').addEventListener('submit', (e) => e.preventDefault());
  function say(text, button) {
    message.textContent = text;
    if (button) message.appendChild(button);
    message.hidden = !text;
  }
  function apply() {
    const p = filters.prompt.value, e = filters.endpoint.value, s = filters.status.value;
    const v = filters.verdict.value;
    const q = filters.text.value.trim().toLowerCase();
    let n = 0;
    for (const card of cards) {
      const d = card.dataset;
      const ok = (!p || d.prompt === p) && (!e || d.endpoint === e) &&
        (!s || d.status === s) && (!v || d.verdict === v) && (!q || d.search.includes(q));
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

  // -- moving with j/k over the cards a person judges ------------------------------------
  let current = null;
  function judgeable() {
    return cards.filter((c) => !c.hidden && c.dataset.kind && c.dataset.status === 'done');
  }
  function focus(card) {
    if (current) current.classList.remove('current');
    current = card;
    if (card) {
      card.classList.add('current');
      card.scrollIntoView({block: 'nearest'});
    }
  }
  function move(step) {
    const list = judgeable();
    if (!list.length) return;
    const at = list.indexOf(current);
    focus(list[at < 0 ? (step > 0 ? 0 : list.length - 1) :
      Math.min(list.length - 1, Math.max(0, at + step))]);
  }

  // -- verdicts (served page only) ---------------------------------------------------------
  function showVerdict(card, verdict, note) {
    const done = card.dataset.status === 'done';
    card.dataset.verdict = verdict || (done ? 'todo' : '');
    const badge = card.querySelector('.vbadge');
    if (badge) {
      badge.className = 'vbadge v-' + (verdict || 'none');
      badge.textContent = verdict || (done ? 'not judged yet' : '');
    }
    if (note !== undefined) {
      const box = card.querySelector('p.note');
      if (box) { box.textContent = note || ''; box.hidden = !note; }
    }
  }
  async function post(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'X-Raybatch-Token': token},
      body: JSON.stringify(body),
      credentials: 'same-origin',
    });
    let data = {};
    try { data = await response.json(); } catch (err) { data = {}; }
    if (!response.ok) throw new Error(data.error || ('HTTP ' + response.status));
    return data;
  }
  async function judge(card, verdict) {
    if (!card || !token || card.dataset.status !== 'done') return;
    try {
      const data = await post('api/verdict', {key: card.dataset.key, verdict: verdict});
      showVerdict(card, data.verdict);
      say('');
      if (verdict && filters.verdict.value === 'todo') move(1);
    } catch (err) { say('not saved: ' + err.message); }
  }
  async function saveNote(card, text) {
    try {
      const data = await post('api/note', {key: card.dataset.key, note: text});
      showVerdict(card, card.dataset.verdict === 'todo' ? '' : card.dataset.verdict, data.note);
      say('');
    } catch (err) { say('note not saved: ' + err.message); }
  }
  function openNote(card) {
    if (!card || !token || card.querySelector('textarea')) return;
    const box = document.createElement('textarea');
    box.className = 'notebox';
    box.placeholder = 'a note (Enter saves, Esc cancels)';
    box.value = card.querySelector('p.note').textContent;
    card.querySelector('.meta').appendChild(box);
    box.focus();
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        saveNote(card, box.value);
        box.remove();
      } else if (e.key === 'Escape') { box.remove(); }
      e.stopPropagation();
    });
  }
  async function reroll(card) {
    try {
      const data = await post('api/reroll', {key: card.dataset.key});
      delete card.dataset.reroll;
      card.querySelector('.rolled').textContent = 'rolled again as take ' + data.take;
      say('take ' + data.take + ' of ' + data.label + ' added (est. $' +
        Number(data.cost).toFixed(2) + '): the next run renders it');
    } catch (err) { say('not rolled again: ' + err.message); }
  }
  document.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-act]');
    if (!button) return;
    const card = button.closest('article.job');
    focus(card);
    const act = button.dataset.act;
    if (act === 'note') openNote(card);
    else if (act === 'reroll') reroll(card);
    else judge(card, act === 'clear' ? null : act);
  });
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest('input, select, textarea')) return;
    if (e.key === 'j') move(1);
    else if (e.key === 'k') move(-1);
    else if (!token || !current) return;
    else if (e.key === 'a') judge(current, 'approved');
    else if (e.key === 'r') judge(current, 'rejected');
    else if (e.key === 'u') judge(current, null);
    else if (e.key === 'n') { e.preventDefault(); openNote(current); }
  });

  // -- following a run from the served page ------------------------------------------------
  if (token) {
    let since = {updated: 0, verdict: 0};
    let fresh = 0;
    const reload = document.createElement('button');
    reload.type = 'button';
    reload.textContent = 'show them';
    reload.addEventListener('click', () => location.reload());
    async function follow() {
      try {
        const q = 'api/jobs?updated=' + since.updated + '&verdict=' + since.verdict;
        const response = await fetch(q, {credentials: 'same-origin'});
        if (!response.ok) return;
        const data = await response.json();
        for (const [key, job] of Object.entries(data.jobs)) {
          const card = byKey.get(key);
          if (!card) continue;
          if (job.state !== card.dataset.status) {
            if (job.state === 'done') fresh++;
            card.dataset.status = job.state;
            const badge = card.querySelector('.badge');
            badge.textContent = job.state;
            badge.className = 'badge s-' + job.state;
          }
          if (card.dataset.kind) showVerdict(card, job.verdict, job.note);
        }
        since = data.since;
        if (fresh && !message.textContent.startsWith('take')) {
          say(fresh + ' new result(s) since this page was loaded', reload);
        }
        if (data.total > cards.length) {
          say((data.total - cards.length) + ' new job(s) planned since this page loaded', reload);
        }
      } catch (err) { /* the server stopped: the page stays as it is */ }
    }
    follow();
    setInterval(follow, 3000);
  }

  // -- media that load as they come near the screen ---------------------------------------
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
