"""Where a clip's shots change, found by PySceneDetect over its PyAV reader."""

from __future__ import annotations

from pathlib import Path

from ._errors import MediaError, media_errors

#: PySceneDetect's ContentDetector default: the mean change of hue, saturation and
#: brightness between frames (0-255) that makes a cut.
DEFAULT_THRESHOLD = 27.0


def detect_shots(
    path: Path, *, threshold: float = DEFAULT_THRESHOLD, min_shot_seconds: float = 0.5
) -> list[float]:
    """The times (seconds) at which a new shot starts in ``path``, in order; 0 is not one.

    A hard cut is a frame whose content differs from the one before by more than
    ``threshold``; cuts closer than ``min_shot_seconds`` to the previous one are ignored
    (a flash is not a shot). Decodes the whole clip, one frame at a time.
    """
    # PySceneDetect pulls in OpenCV: imported here so that planning without shots never
    # pays for it.
    from scenedetect import ContentDetector, SceneManager
    from scenedetect.backends.pyav import VideoStreamAv
    from scenedetect.video_stream import FrameRateUnavailable, VideoOpenFailure

    with media_errors(path):
        try:
            # suppress_output: otherwise PySceneDetect turns FFmpeg's logging on for the
            # whole process (libx264's statistics on stderr at every later encode).
            video = VideoStreamAv(str(path), suppress_output=True)
        except (VideoOpenFailure, FrameRateUnavailable) as exc:
            reason = str(exc) or "it has no frame rate"
            raise MediaError(path, f"could not be opened for shot detection: {reason}") from None
        rate = float(video.frame_rate) or 24.0
        manager = SceneManager()
        manager.add_detector(
            ContentDetector(
                threshold=threshold, min_scene_len=max(1, round(min_shot_seconds * rate))
            )
        )
        manager.detect_scenes(video)
        scenes = manager.get_scene_list()
    return [float(start.seconds) for start, _ in scenes[1:]]
