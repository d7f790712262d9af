"""Videos of episodes: rgb frames -> mp4 files, logged to TensorBoard and W&B.

Frames come from the env's ``render()``: an env made with ``render_mode="rgb_array"`` (the
built-in cartpole, any gymnasium env) gives ``(H, W, 3)`` uint8 images; an env that only draws text
(the other built-in envs) has its text drawn on an image. The mp4 is written by imageio through
imageio-ffmpeg (its wheel ships the ffmpeg binary). TensorBoard gets the episode as an animated GIF
image summary (what ``SummaryWriter.add_video`` writes, without its moviepy dependency); W&B gets
``wandb.Video`` of the mp4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Episode",
    "frame_of",
    "log_video",
    "make_render_env",
    "record",
    "save_videos",
    "videos_of_run",
    "write_mp4",
]

FPS = 30


@dataclass
class Episode:
    """One recorded episode: ``frames`` ``(T, H, W, 3)`` uint8, one per step (the observation
    each action was chosen on), its return and length."""

    frames: np.ndarray
    episode_return: float
    length: int


def frame_of(rendering: Any) -> np.ndarray:
    """``rendering`` as an ``(H, W, 3)`` uint8 image: images pass through (RGBA loses alpha,
    gray gains channels), text is drawn white on black. Raises ``ValueError`` for None."""
    if isinstance(rendering, str):
        return _text_image(rendering)
    if rendering is None:
        raise ValueError("the env renders nothing (render() returned None): no video frames")
    img = np.asarray(rendering)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"render() gave an array of shape {img.shape}; expected (H, W, 3)")
    if img.dtype != np.uint8:
        img = np.clip(img * (255 if img.dtype.kind == "f" else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def _text_image(text: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    lines = text.splitlines() or [""]
    width = 16 + 7 * max(len(line) for line in lines)
    height = 16 + 14 * len(lines)
    width, height = width + width % 16, height + height % 16  # even sizes for the codec
    img = Image.new("RGB", (width, height))
    ImageDraw.Draw(img).multiline_text((8, 8), text, fill=(235, 235, 235), font=font, spacing=3)
    return np.asarray(img)


def make_render_env(cfg: Any, seed: int) -> Any:
    """A serial VecEnv of one whole env of ``cfg`` (one row, or one per agent of a multi-agent
    env) that renders images when the env can (``render_mode="rgb_array"``), text otherwise;
    separate from any training rows."""
    from puffer import vector
    from puffer.envs.config import creator as env_creator

    creator, kwargs = env_creator(cfg.env)
    rows = vector.rows_per_env(creator, kwargs)
    try:
        return vector.make(
            creator,
            num_envs=rows,
            backend="serial",
            seed=seed,
            env_kwargs={**kwargs, "render_mode": "rgb_array"},
        )
    except TypeError:  # the env takes no render_mode: it draws text
        return vector.make(
            creator, num_envs=rows, backend="serial", seed=seed, env_kwargs=kwargs or None
        )


MAX_WIDTH = 320  # wider frames are kept at every 2nd (4th, ...) pixel: 500 frames stay ~100 MB


def _shrink(frame: np.ndarray) -> np.ndarray:
    stride = -(-frame.shape[1] // MAX_WIDTH)
    return frame[::stride, ::stride] if stride > 1 else frame


def record(
    policy: Any, vecenv: Any, episodes: int, *, seed: int, max_frames: int = 1000
) -> list[Episode]:
    """Play ``episodes`` episodes of the one env of ``vecenv`` (its rows are the env's agents)
    with ``policy``'s deterministic actions, keeping a frame of ``render(0)`` per step (at most
    ``max_frames`` per episode; frames wider than ``MAX_WIDTH`` pixels are subsampled). An
    episode ends once every row's has: its return is the mean of the agents', its length the
    longest."""
    import torch

    out: list[Episode] = []
    rows = vecenv.num_envs
    obs, _ = vecenv.reset(seed)
    state = policy.initial_state(rows, torch.device("cpu")) if policy.is_recurrent else None
    frames: list[np.ndarray] = []
    ended, returns, lengths = np.zeros(rows, bool), [], []
    with torch.no_grad():
        while len(out) < episodes:
            if len(frames) < max_frames:
                frames.append(_shrink(frame_of(vecenv.render(0))))
            actions, state = policy.predict(obs, state, deterministic=True)
            obs, _, term, trunc, infos = vecenv.step(actions)
            done = term | trunc
            if done.any():
                n = int(done.sum())
                ended |= done
                returns += [float(r) for r in infos.get("episode_return", [float("nan")] * n)]
                lengths += [int(k) for k in infos.get("episode_length", [len(frames)] * n)]
                state = policy.reset_state(state, torch.as_tensor(done))
            if ended.all():
                out.append(Episode(np.stack(frames), float(np.mean(returns)), max(lengths)))
                frames, returns, lengths = [], [], []
                ended[:] = False
    return out


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = FPS) -> Path:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 as an H.264 mp4 (imageio + imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", quality=7, macro_block_size=1, ffmpeg_log_level="error"
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    return path


GIF_FRAME_MS = 40  # GIF delays are in 10 ms units: 25 fps is exact


def gif_bytes(frames: np.ndarray) -> bytes:
    """``frames`` as an animated GIF (for TensorBoard's image dashboard), ``GIF_FRAME_MS`` a frame
    (identical consecutive frames become one frame shown as long)."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", frames, extension=".gif", duration=GIF_FRAME_MS, loop=0)


def log_video(sinks: list[Any], tag: str, episode: Episode, mp4: Path, step: int) -> list[str]:
    """Log one episode's video to every TensorBoard and W&B sink among ``sinks``
    (``puffer.loggers`` sinks); returns the kinds of sinks it went to."""
    from puffer.loggers import TensorBoard, Wandb

    done = []
    for sink in sinks:
        if isinstance(sink, TensorBoard):
            tensorboard_video(sink.writer, tag, episode.frames, step)
            done.append("tensorboard")
        elif isinstance(sink, Wandb):
            import wandb

            sink.run.log({tag: wandb.Video(str(mp4), format="mp4")}, step=int(step))
            done.append("wandb")
    return done


def tensorboard_video(writer: Any, tag: str, frames: np.ndarray, step: int) -> None:
    """An animated-GIF image summary, as ``SummaryWriter.add_video`` writes it, on ``writer``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames))
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    writer.file_writer.add_summary(summary, int(step))
    writer.flush()


def save_videos(
    policy: Any,
    cfg: Any,
    run_dir: str | Path,
    step: int,
    *,
    episodes: int = 1,
    seed: int = 0,
    sinks: list[Any] = (),  # type: ignore[assignment]
) -> list[Path]:
    """Record ``episodes`` episodes of ``policy`` on a fresh env of ``cfg`` and write them as
    ``<run_dir>/videos/step<step>-ep<i>.mp4``, logged as ``eval/video`` to ``sinks``."""
    vecenv = make_render_env(cfg, seed)
    try:
        recorded = record(policy, vecenv, episodes, seed=seed)
    finally:
        vecenv.close()
    paths = []
    for i, episode in enumerate(recorded):
        path = write_mp4(episode.frames, Path(run_dir) / "videos" / f"step{step:09d}-ep{i}.mp4")
        log_video(list(sinks), "eval/video" if i == 0 else f"eval/video_{i}", episode, path, step)
        paths.append(path)
    return paths


def run_sinks(cfg: Any, run_dir: Path) -> list[Any]:
    """The TensorBoard and W&B sinks ``cfg.logger`` enables, appending to the run's own logs
    (W&B continues the run's id from ``<run_dir>/wandb_id``)."""
    from omegaconf import OmegaConf

    from puffer.loggers import TensorBoard, Wandb

    sinks: list[Any] = []
    if cfg.logger.tensorboard:
        sinks.append(TensorBoard(run_dir / "tb"))
    w = cfg.logger.wandb
    if w.enabled and w.mode != "disabled":
        config = OmegaConf.to_container(cfg, resolve=True)
        sinks.append(
            Wandb(run_dir, config, mode=w.mode, project=w.project, entity=w.entity, group=w.group)
        )
    return sinks


def videos_of_run(
    run_dir: str | Path, checkpoint: str | None = None, episodes: int = 1, cfg: Any = None
) -> list[Path]:
    """``python -m puffer.eval run=<dir> video=true``: videos of the run's policy (its latest
    checkpoint or the one named; ``cfg`` defaults to the run's own config) under
    ``<run_dir>/videos/``, logged to the run's sinks."""
    from puffer import checkpoint as ckpt
    from puffer.export import load_policy

    run_dir = Path(run_dir)
    policy, path, cfg = load_policy(run_dir, checkpoint, cfg)
    step = int(ckpt.load(path).get("meta", {}).get("global_step", 0))
    sinks = run_sinks(cfg, run_dir)
    try:
        return save_videos(
            policy, cfg, run_dir, step, episodes=episodes, seed=cfg.seed, sinks=sinks
        )
    finally:
        for sink in sinks:
            sink.close()
