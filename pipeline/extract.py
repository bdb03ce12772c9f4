"""Feature extraction over many videos: the per-video function, and running it locally over worker processes.

`extract_one` is the unit of work for every runner (in-process, local worker processes, Ray tasks): it decodes one
video, computes its features and writes them into the shared store, recording success or the failure's reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from avdet.errors import AvdetError, DecodeError, StoreError, StoreWriteError
from avdet.extractors.base import AudioInput, Extractor, ExtractorSet, Features, VisualInput, num_grid_rows
from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.io import media
from avdet.pipeline.io.store import FeatureStore, StoredFeatures, spec_hash
from avdet.pipeline.threads import apply_threads, decide_threads

log = logging.getLogger(__name__)

# A decode that yields less than this share of the probed duration is a truncated or corrupt file.
MIN_DECODED_SHARE = 0.9
MediaCallback = Callable[[float, float], None]  # (media seconds done, the video's media seconds)


@dataclass(frozen=True)
class ExtractOptions:
    extractor: str = "lite"
    backend: media.Backend = "ffmpeg"
    overwrite: bool = False
    weights_dir: str | None = None
    random_weights: bool = False
    device: str = "cpu"
    modality: str = "audio_visual"  # audio | visual: compute (and cache) only that stream

    def build(self) -> ExtractorSet:
        """The extractor set these options name."""
        return build_extractor_set(
            self.extractor, weights_dir=self.weights_dir, random_weights=self.random_weights, device=self.device
        )


@dataclass(frozen=True)
class ExtractResult:
    path: str
    video_id: str
    status: str  # "done" (extracted now) | "cached" (already in the store) | "failed"
    reason: str | None = None
    rows: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    features: StoredFeatures | None = field(default=None, repr=False, compare=False)  # with `keep_features`


# Audio features of a long video are computed AUDIO_CALL_ROWS grid rows at a time (about 82 s at 0.32 s), so memory
# holds one call's waveform and spectrogram instead of the whole track's (14 GB for 3 hours of lite audio). lite's
# float64 spectrogram of a call is the peak of a whole extraction: 1,024 rows (5.5 min) peaked at 0.8-0.97 GB, 256
# at 0.48-0.55 GB, no slower.
AUDIO_CALL_ROWS = 256
AUDIO_MARGIN_S = 2.0  # samples past a call's last row window (spectrogram frames reach a little beyond it)


def streamed_audio_features(
    chunks: Iterable[np.ndarray],
    extractor: Extractor,
    sample_rate: int,
    duration: float,
    rows_per_call: int = AUDIO_CALL_ROWS,
) -> Features:
    """The audio extractor over a streamed waveform, `rows_per_call` rows per call, rows identical to one call on
    the whole waveform: each call starts on a row boundary (a whole number of samples) and sees every sample its
    rows use. Extractors whose row step is not a whole number of samples get one call."""
    total = num_grid_rows(duration, extractor.window_s, extractor.step_s)
    hop = extractor.step_s * sample_rate  # samples between row starts
    chunks = iter(chunks)
    if total <= rows_per_call or abs(hop - round(hop)) > 1e-9:
        return extractor(AudioInput(np.concatenate(list(chunks)), sample_rate, duration))
    hop = round(hop)
    buffer = np.zeros(0, dtype=np.float32)  # the waveform from the current call's first row on
    values, times = [], []
    for first in range(0, total, rows_per_call):
        rows = min(rows_per_call, total - first)
        need = int(round(((rows - 1) * extractor.step_s + extractor.window_s + AUDIO_MARGIN_S) * sample_rate))
        parts, have = [buffer], len(buffer)
        while have < need and (part := next(chunks, None)) is not None:
            parts.append(part)
            have += len(part)
        buffer = np.concatenate(parts)
        span = (rows - 0.5) * extractor.step_s + extractor.window_s  # a duration of `rows` rows (half a step spare)
        feats = extractor(AudioInput(buffer[:need], sample_rate, span))
        if len(feats.values) < rows:
            raise RuntimeError(f"{extractor.name}: {len(feats.values)} rows for {span:.2f} s of audio, not {rows}")
        values.append(feats.values[:rows])
        times.append(feats.times[:rows] + first * extractor.step_s)
        buffer = buffer[rows * hop :]
    return Features(np.concatenate(values), np.concatenate(times))


def modality_spec(spec: dict, modality: str) -> dict:
    """The store spec of features computed for `modality`: the extractor spec itself for both streams, a spec of
    its own (a separate cache entry) for one stream."""
    return spec if modality == "audio_visual" else {**spec, "modality": modality}


def _empty_like(features: Features) -> Features:
    """Zero-width rows on another stream's time grid: the stream a unimodal model does not read."""
    return Features(np.zeros((len(features), 0), np.float32), features.times.copy())


def only(stored: StoredFeatures, modality: str) -> StoredFeatures:
    """Full features reduced to the stream(s) of `modality` (the other one zero-width on the same grid)."""
    if modality == "audio":
        return StoredFeatures(visual=_empty_like(stored.audio), audio=stored.audio, duration=stored.duration)
    if modality == "visual":
        return StoredFeatures(visual=stored.visual, audio=_empty_like(stored.visual), duration=stored.duration)
    return stored


def compute_features(
    path: Path,
    extractors: ExtractorSet,
    backend: media.Backend = "ffmpeg",
    modality: str = "audio_visual",
    problems: list[str] | None = None,
    on_media: MediaCallback | None = None,
) -> StoredFeatures:
    """Decode one video and run the extractors it needs on it (no caching): both, or for a unimodal model only
    that stream's (audio-only never decodes a frame; then an audio file without video is fine). ffmpeg's decode
    errors go to `problems`; `on_media(done_s, total_s)` follows the work in media seconds (the mean over the
    streams computed, visual first), called as decoded chunks go to the extractors."""
    info = media.probe(path)
    visual = audio = None
    streams = 2 if modality == "audio_visual" else 1
    seen = {"visual": 0.0, "audio": 0.0}  # media seconds handed to each extractor so far

    def advanced(stream: str, seconds: float) -> None:
        seen[stream] += seconds
        if on_media is not None:
            on_media(min(sum(seen.values()) / streams, info.duration), info.duration)

    if modality != "audio":
        if not info.has_video:
            raise DecodeError(path, "no video stream (audio-only file)")
        req = extractors.media
        counted = [0]

        def frames() -> Iterator[np.ndarray]:
            for chunk in media.read_frames(
                path,
                req.fps,
                req.size,
                resize=req.resize,
                short_side=req.short_side,
                backend=backend,
                problems=problems,
            ):
                counted[0] += len(chunk)
                advanced("visual", len(chunk) / req.fps)
                yield chunk

        visual = extractors.visual(VisualInput(frames(), req.fps, info.duration))
        expected = info.duration * req.fps
        if counted[0] < MIN_DECODED_SHARE * expected - 1:
            raise DecodeError(
                path, f"truncated or corrupt: decoded {counted[0] / req.fps:.2f} s of {info.duration:.2f} s"
            )
    if modality != "visual":
        rate = extractors.media.sample_rate

        def samples() -> Iterator[np.ndarray]:
            for chunk in media.stream_audio(path, rate, info=info, problems=problems):
                advanced("audio", len(chunk) / rate)
                yield chunk

        audio = streamed_audio_features(samples(), extractors.audio, rate, info.duration)
    visual = _empty_like(audio) if visual is None else visual
    audio = _empty_like(visual) if audio is None else audio
    return StoredFeatures(visual=visual, audio=audio, duration=info.duration)


def _cached(store: FeatureStore, video_key: str, key: str) -> StoredFeatures | None:
    """The stored features, or None when there are none or the file is damaged (then it is recomputed: heals)."""
    if not store.has(video_key, key):
        return None
    try:
        return store.load_key(video_key, key)
    except StoreError as err:
        log.warning("%s; recomputing", err)
        return None


def _decode_warning(problems: list[str]) -> str | None:
    """One line for a file that decoded with errors (kept as the index entry's reason), None for a clean one."""
    if not problems:
        return None
    return f"decoded with {len(problems)} decode errors (first: {problems[0][:120]})"


def extract_one(
    path: str | Path,
    store: FeatureStore,
    extractors: ExtractorSet,
    options: ExtractOptions,
    *,
    keep_features: bool = False,
    on_media: MediaCallback | None = None,
) -> ExtractResult:
    """Extract one video into the store unless it is there already; never raises for a bad video. With
    `keep_features` the result carries the features (read once, from the cache or just computed); `on_media`
    follows a computation in media seconds (`compute_features`)."""
    path = Path(path)
    vid = media.video_id(path)
    key = store.register_spec(modality_spec(extractors.spec, options.modality))
    full_key = spec_hash(extractors.spec)
    start = time.perf_counter()
    video_key = f"path:{os.path.abspath(path)}"  # not resolve(): a looping symlink must fail below, not here
    problems: list[str] = []

    def record(**fields: object) -> None:  # this video's row in the index, under its key as known by then
        store.record(video_key=video_key, extractor=key, video_id=vid, path=path, **fields)

    try:
        media.check_media_file(path)  # before anything opens it (a named pipe would block)
        video_key = store.content_key(path)  # every byte: two videos never share features
        with store.lock(video_key, key):
            stored = _cached(store, video_key, key) if not options.overwrite else None
            status = "cached"
            if stored is None and key != full_key and not options.overwrite:
                full = _cached(store, video_key, full_key)  # a full extraction serves a unimodal model
                stored = None if full is None else only(full, options.modality)
            if stored is None:
                stored = compute_features(path, extractors, options.backend, options.modality, problems, on_media)
                store.save(video_key, key, stored, video_id=vid, path=os.path.abspath(path))
                status = "done"
        warning = _decode_warning(problems)
        if warning:
            log.info("%s: %s", path, warning)  # the result carries it; the CLI shows it
        wall = time.perf_counter() - start
        rows = len(stored.visual)
        record(status="done", reason=warning, rows=rows, media_seconds=stored.duration, wall_seconds=wall)
        kept = stored if keep_features else None
        return ExtractResult(str(path), vid, status, warning, rows, stored.duration, wall, kept)
    except StoreWriteError:  # the store's disk, not this video: every other video would fail the same way
        raise
    except AvdetError as err:
        reason = err.reason if isinstance(err, DecodeError) else str(err)
        wall = time.perf_counter() - start
        try:
            record(status="failed", reason=reason, wall_seconds=wall)
        except Exception as db_err:  # the store itself failing must not hide the video's own error
            log.error("could not record failure of %s: %s", path, db_err)
        return ExtractResult(str(path), vid, "failed", reason, wall_seconds=wall)


def warn_duplicate_ids(paths: Iterable[str | Path]) -> list[str]:
    """Warn about video ids (file names without suffix) shared by several files of a batch: the store keeps both
    (it is keyed by content), but annotations name a video by its id, and the id finds only the newest of them."""
    by_id: dict[str, list[str]] = {}
    for p in paths:
        by_id.setdefault(media.video_id(p), []).append(str(p))
    shared = {vid: files for vid, files in by_id.items() if len(files) > 1}
    for vid, files in shared.items():
        log.warning(
            "video id %r is shared by %d files (%s): training and eval find only the one extracted last",
            vid,
            len(files),
            ", ".join(files),
        )
    return sorted(shared)


# -- local worker processes ------------------------------------------------------------------------------------
_worker: dict = {}


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    """Workers die with the process that started them: a SIGKILLed `extract` gives them no chance to stop them, and
    an orphan would go on extracting and then idle forever. An orphan is re-parented, so its parent pid changes.
    A worker forked by the forkserver is the server's child (the server exits with `extract`): it watches that."""
    started_by = os.getppid()

    def watch() -> None:
        while os.getppid() == started_by and _alive(parent):
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process `pid` is still ours to serve (signal 0 only asks; another owner means the pid was reused)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def worker_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: forked from a server that imported this module (and torch) once, so a worker
    starts in milliseconds and shares those pages instead of importing torch again (2-3 s of CPU each, a large part
    of a short batch's work). The server never runs torch, so forking it is safe (fork after torch has started
    threads can deadlock). spawn where there is no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _init_worker(cache: str, options: ExtractOptions, threads: int, parent: int) -> None:
    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    _worker["store"] = FeatureStore(cache)
    _worker["extractors"] = options.build()
    _worker["options"] = options


def _run_in_worker(path: str) -> ExtractResult:
    return extract_one(path, _worker["store"], _worker["extractors"], _worker["options"])


def extract_videos(
    paths: Iterable[str | Path],
    cache: str | Path,
    options: ExtractOptions,
    *,
    workers: int = 1,
    threads: int | None = None,
    on_result: Callable[[ExtractResult], None] | None = None,
    on_media: Callable[[str, float, float], None] | None = None,
) -> list[ExtractResult]:
    """Extract every video; results arrive through `on_result` as they finish, in completion order. Each process
    runs `threads` torch threads (default: `pipeline.threads` policy for `workers` processes). `on_media(path,
    done_s, total_s)` follows each video's computation in media seconds (one process only: workers cannot call
    back)."""
    paths = [str(p) for p in paths]
    media.require_ffmpeg()  # one line for the batch, not one failed video each
    warn_duplicate_ids(paths)
    store = FeatureStore(cache)  # fails early and clearly on an unwritable cache
    extractors = options.build()
    results: list[ExtractResult] = []

    def done(res: ExtractResult) -> None:
        results.append(res)
        if on_result:
            on_result(res)

    if workers <= 1:
        apply_threads(1, threads)
        for p in paths:
            follow = None if on_media is None else partial(on_media, p)
            done(extract_one(p, store, extractors, options, on_media=follow))
        return results
    threads = decide_threads(workers, threads)
    with ProcessPoolExecutor(
        workers,
        mp_context=worker_context(),
        initializer=_init_worker,
        initargs=(str(cache), options, threads, os.getpid()),
    ) as pool:
        futures = {pool.submit(_run_in_worker, p): p for p in paths}
        for fut in as_completed(futures):
            try:
                done(fut.result())
            except StoreWriteError:  # full or read-only disk: stop here, one line, instead of failing every video
                pool.shutdown(cancel_futures=True)
                raise
            except Exception as err:  # a crashed worker process: report the video, keep the others going
                p = futures[fut]
                done(ExtractResult(p, media.video_id(p), "failed", f"worker crashed ({type(err).__name__}: {err})"))
    return results


# -- Ray tasks ----------------------------------------------------------------------------------------------------
_ray_cache: dict = {}


def _ray_task(path: str, cache: str, options: ExtractOptions) -> ExtractResult:
    """One video as a Ray task: the store and extractors are built once per worker process and reused."""
    key = (cache, options)
    if key not in _ray_cache:
        torch.set_num_threads(1)
        _ray_cache.clear()
        _ray_cache[key] = (
            FeatureStore(cache),
            options.build(),
        )
    store, extractors = _ray_cache[key]
    return extract_one(path, store, extractors, options)


def extract_videos_ray(
    paths: Iterable[str | Path],
    cache: str | Path,
    options: ExtractOptions,
    *,
    address: str | None = None,
    on_result: Callable[[ExtractResult], None] | None = None,
    max_retries: int = 3,
) -> list[ExtractResult]:
    """Run `extract_one` as Ray tasks; `address` None starts a local runtime sized to this machine.

    Workers write into the shared store themselves (on a multi-node cluster the cache must be on a shared
    filesystem). A task whose worker dies is retried; the store's locks and atomic writes keep a retry from
    duplicating or half-writing anything.
    """
    try:
        import ray
    except ImportError:
        raise AvdetError("--ray needs Ray: pip install 'avdet[dist]'") from None
    paths = [str(p) for p in paths]
    warn_duplicate_ids(paths)
    cache = str(Path(cache).resolve())
    FeatureStore(cache)  # fails early and clearly on an unwritable cache
    started = not ray.is_initialized()
    if started:
        if address in (None, "local"):
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    try:
        num_gpus = 1 if options.device.startswith("cuda") else 0
        task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries)(_ray_task)
        pending = {task.remote(p, cache, options): p for p in paths}
        results: list[ExtractResult] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            path = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as err:
                if isinstance(getattr(err, "cause", None), StoreWriteError):  # a full or read-only disk: stop
                    raise err.cause from None
                # retries exhausted: report the video, keep the others going
                res = ExtractResult(path, media.video_id(path), "failed", f"ray task failed ({type(err).__name__})")
            results.append(res)
            if on_result:
                on_result(res)
        return results
    finally:
        if started:
            ray.shutdown()
