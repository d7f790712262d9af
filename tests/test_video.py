"""Videos of episodes: rgb frames from the env, an mp4 with one frame per step, logged to
TensorBoard (an animated GIF image summary, read back) and to W&B (offline)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from puffer import video

_RUNS: dict[str, Path] = {}


@pytest.fixture
def cartpole_run(tmp_path_factory, helpers) -> Path:
    """A real tiny cartpole run logging to TensorBoard and W&B offline (made once)."""
    if "run" not in _RUNS:
        base = tmp_path_factory.mktemp("video")
        args = ["env=cartpole", *helpers.TINY, "logger=[tensorboard,wandb]"]
        done = helpers.run_module("puffer.train", *args, cwd=base)
        assert done.returncode == 0, done.stderr
        _RUNS["run"] = helpers.only_run(base)
    return _RUNS["run"]


def _tb_images(log_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def test_cartpole_renders_rgb_frames():
    from puffer import vector

    env = vector.make("cartpole", num_envs=2, env_kwargs={"render_mode": "rgb_array"})
    env.reset(0)
    frame = env.render(1)
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    assert (frame == 0).all(axis=-1).sum() > 1000  # the cart (black)
    assert (np.abs(frame.astype(int) - (202, 152, 101)).sum(-1) == 0).sum() > 500  # the pole
    text = vector.make("cartpole", num_envs=1)
    text.reset(0)
    assert isinstance(text.render(0), str)  # the default stays the terminal drawing


def test_text_renderings_become_images():
    img = video.frame_of("bandit [ ][*]\nlast pull: arm 1")
    assert img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8
    assert img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0 and img.max() > 200
    with pytest.raises(ValueError, match="renders nothing"):
        video.frame_of(None)


def test_mp4_has_one_frame_per_step(cartpole_run, tmp_path):
    from puffer.export import load_policy

    policy, _, cfg = load_policy(cartpole_run)
    env = video.make_render_env(cfg, seed=3)
    try:
        episodes = video.record(policy, env, 2, seed=3)
    finally:
        env.close()
    assert len(episodes) == 2
    for i, ep in enumerate(episodes):
        assert ep.frames.shape == (ep.length, 200, 300, 3) and ep.length > 5  # 600x400 halved
        path = video.write_mp4(ep.frames, tmp_path / f"ep{i}.mp4")
        assert _mp4_frames(path) == (ep.length, (200, 300))


def _mp4_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """``(frames, (height, width))`` of an mp4, read by ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    width, height = meta["size"]
    return count, (height, width)


def test_videos_of_a_run_are_written_and_logged(cartpole_run, helpers):
    paths = video.videos_of_run(cartpole_run, episodes=1)
    assert [p.parent for p in paths] == [cartpole_run / "videos"]
    count, size = _mp4_frames(paths[0])
    images = _tb_images(cartpole_run / "tb")
    (event,) = images["eval/video"]
    gif = Image.open(io.BytesIO(event.encoded_image_string))
    shown_ms = sum(f.info["duration"] for f in ImageSequence.Iterator(gif))
    assert shown_ms == count * video.GIF_FRAME_MS and count > 5  # the same episode's frames
    assert (event.height, event.width) == size == (200, 300)
    # W&B continues the run's id in a new offline run directory (the last one made).
    latest = sorted((cartpole_run / "wandb").glob("offline-run-*"))[-1]
    assert b"eval/video" in helpers.wandb_data(latest, b"eval/video")


def test_puffer_eval_video_true(cartpole_run, helpers, tmp_path):
    import shutil

    shutil.rmtree(cartpole_run / "videos", ignore_errors=True)
    proc = helpers.run_module(
        "puffer.eval", f"run={cartpole_run}", "episodes=2", "video=true", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "mean return" in proc.stdout and "videos:" in proc.stdout
    names = sorted(p.name for p in (cartpole_run / "videos").glob("*.mp4"))
    assert names == ["step000002048-ep0.mp4", "step000002048-ep1.mp4"]  # 2 episodes, step 2048
    assert all(_mp4_frames(cartpole_run / "videos" / n)[0] > 5 for n in names)
