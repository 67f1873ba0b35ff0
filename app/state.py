"""Streamlit glue: the model shared by all sessions, this session's choice of model, its results.

* One :class:`~app.model_loading.ModelHandle` per model (``st.cache_resource``): the process loads
  each model once, in the background, and every session uses the same thread-safe analyzer.
* Per session (``st.session_state``, in memory only): the uploaded artifact's checksum, each
  upload's display copy and network input (never the full-size image), the results, the maps
  of the results that were on screen (all dropped as soon as the images are removed, so
  memory does not grow with the number of uploads), and the user's per-image magnification
  and case id. A session whose browser has gone is closed by :mod:`app.sessions`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from app import model_loading, model_source, results, uploads
from app.model_loading import ModelHandle
from app.model_source import ModelSource, Origin
from app.results import AnalysisSettings, ImageResult
from app.wording import plural
from model.breakhis import read_breakhis_filename
from model.config import CAM_METHODS
from model.errors import ModelLocationError

if TYPE_CHECKING:  # importing it at run time would import TensorFlow
    from model.analysis import ImageAnalysis

_RESULTS = "bcd_results"
_PREPARED = "bcd_prepared_uploads"
_MAPS = "bcd_maps"
_UPLOAD_DIGEST = "bcd_model_upload_digest"
_DIGESTS = "bcd_image_digests"
MAGNIFICATION_CHOICES = "bcd_magnification_choices"
CASE_CHOICES = "bcd_case_choices"


@dataclass(frozen=True)
class ModelContext:
    """The model this session uses: from the server's configuration or its own upload."""

    source: ModelSource | None
    handle: ModelHandle | None
    uploaded: bool = False
    # A model typed in the sidebar that failed while the server's model works: the session
    # keeps the server's model and the sidebar says why the other one is not used.
    refused: ModelHandle | None = None

    @property
    def has_model(self) -> bool:
        return self.handle is not None


@st.cache_resource(show_spinner=False, max_entries=4)
def _handle_for_source(location: str, origin: Origin, detail: str, fingerprint: str) -> ModelHandle:
    # ``fingerprint`` is only part of the cache key: a re-written artifact loads afresh.
    del fingerprint
    return model_loading.start_model_handle(ModelSource(location, origin, detail))


@st.cache_resource(show_spinner=False, max_entries=2)
def _handle_for_upload(digest: str, file_name: str, _upload: UploadedFile) -> ModelHandle:
    # Keyed by the checksum: sessions uploading the same artifact share one loaded model.
    del digest
    return model_loading.start_upload_handle(_upload.getvalue(), file_name)


def configured_model() -> tuple[ModelSource | None, ModelHandle | None]:
    """The server's model (command line, ``BCD_MODEL`` or newest run) and its shared handle."""
    try:
        source = model_source.resolve_model_source(argv=sys.argv[1:])
    except ValueError as error:  # a malformed --model: shown as the model's loading error
        return None, ModelHandle.failed_with("--model", error)
    if source is None:
        return None, None
    # A remote location pins its content (checksum, or a Hub revision) and needs no files'
    # times; a local one is reloaded when its files change.
    fingerprint = (
        source.location if source.path is None else model_source.artifact_fingerprint(source.path)
    )
    handle = _handle_for_source(source.location, source.origin, source.detail, fingerprint)
    return source, handle


def session_location_model(text: str | None) -> ModelHandle | None:
    """The handle for a URL or ``hf://`` id typed in the sidebar (None when empty); shared by
    every session that types the same location, and fetched once (:mod:`model.sources`)."""
    try:
        source = model_source.session_model_source(text or "")
    except ModelLocationError as error:
        return ModelHandle.failed_with("the model location typed in the sidebar", error)
    if source is None:
        return None
    return _handle_for_session_location(source.location, source.detail)


# Its own cache, apart from the server's model: visitors trying locations never evict the
# server's loaded model, and at most two typed models are held in memory (~200 MB each).
@st.cache_resource(show_spinner=False, max_entries=2)
def _handle_for_session_location(location: str, detail: str) -> ModelHandle:
    return model_loading.start_model_handle(ModelSource(location, "this session", detail))


_SERVER_MODEL: list[ModelHandle | None] = []  # the handle preloaded at server start, if any


def preload_configured_model() -> ModelHandle | None:
    """Start loading the server's model before any session asks for it (at server start).

    The handle goes into the same ``st.cache_resource`` entry that :func:`configured_model`
    reads, so the first session finds the model loading or loaded, and is kept for
    :func:`server_model_status`. Never raises: a model that cannot be found or read becomes a
    failed handle, whose message the sessions and ``/api/model`` show.
    """
    try:
        handle = configured_model()[1]
    except Exception as error:  # e.g. an unreadable artifact folder; the server must start
        handle = ModelHandle.failed_with("server model", error)
    _SERVER_MODEL[:] = [handle]
    return handle


def server_model_status() -> dict[str, Any]:
    """Loading state of the model preloaded at server start (see
    :func:`app.model_loading.model_status`); ``"none"`` when there is none or nothing was preloaded.

    Only reads: asking never starts a load (a readiness probe polls this).
    """
    return model_loading.model_status(_SERVER_MODEL[0] if _SERVER_MODEL else None)


def uploaded_model(upload: UploadedFile | None) -> ModelHandle | None:
    """The handle for an artifact ``.zip`` uploaded in the sidebar (None without one)."""
    if upload is None:
        return None
    cached = st.session_state.get(_UPLOAD_DIGEST)
    if cached is None or cached[0] != upload.file_id:
        # Hash once per upload, not on every rerun (an artifact is ~100 MB).
        cached = (upload.file_id, hashlib.sha256(upload.getbuffer()).hexdigest())
        st.session_state[_UPLOAD_DIGEST] = cached
    return _handle_for_upload(cached[1], upload.name, upload)


def model_context(
    upload: UploadedFile | None,
    configured: tuple[ModelSource | None, ModelHandle | None] | None = None,
    location: str | None = None,
) -> ModelContext:
    """A sidebar upload takes over for this session, else a location typed in the sidebar,
    else the configured model.

    A session's own model that fails (an uploaded ``.zip`` that is corrupt or does not fit
    its card, a typed location that cannot be fetched) does not take the session's model
    away: while the server's model is usable, the session keeps it, and the failed one is
    kept as ``refused`` for the sidebar to say why it is not used.
    """
    source, handle = configured_model() if configured is None else configured
    server_usable = handle is not None and handle.error is None
    if (uploaded := uploaded_model(upload)) is not None:
        if uploaded.error is not None and server_usable:
            return ModelContext(source=source, handle=handle, refused=uploaded)
        return ModelContext(source=source, handle=uploaded, uploaded=True)
    if (chosen := session_location_model(location)) is not None:
        if chosen.error is not None and server_usable:
            return ModelContext(source=source, handle=handle, refused=chosen)
        return ModelContext(source=source, handle=chosen)
    return ModelContext(source=source, handle=handle)


def upload_duplicates(files: Sequence[UploadedFile]) -> dict[str, uploads.Duplicate]:
    """The uploads whose content repeats an earlier upload's, by file id
    (:func:`app.uploads.find_duplicates`).

    Each file is hashed once (its digest is kept by file id, in memory, for the session's
    current uploads only): reruns do not re-read every image.
    """
    known: dict[str, str | None] = st.session_state.get(_DIGESTS, {})
    digests = {
        upload.file_id: known[upload.file_id]
        if upload.file_id in known
        else uploads.content_digest(upload.getbuffer())
        for upload in files
    }
    st.session_state[_DIGESTS] = digests  # removed files are forgotten
    return uploads.find_duplicates(
        [(upload.file_id, upload.name, digests[upload.file_id]) for upload in files]
    )


def analyses(
    files: Sequence[UploadedFile],
    handle: ModelHandle,
    settings: AnalysisSettings,
    duplicates: Mapping[str, uploads.Duplicate] | None = None,
) -> list[ImageResult]:
    """Results for the uploaded files in order (probability, label, checks, TTA when asked;
    maps are added for the results on screen by :func:`with_maps`), computing only what this
    session lacks, with a progress bar for a batch.

    A file whose type is not an image type gets its reason without being read
    (:func:`app.uploads.refusal_reason`); a duplicate (``duplicates``, by file id) takes the
    result of the earlier upload it repeats, under its own name, without running the network
    again.

    Each other upload is decoded once per model into a display copy and the network input
    (:func:`app.results.prepare_upload`): the session never keeps a full-size image. Only
    ``settings.tta`` is part of the results' key: changing the map's method, layer or target
    runs the network for the images on screen only (:func:`with_maps`), and opacity and
    colormap only re-blend a stored map. Everything of files no longer uploaded is dropped.
    """
    duplicates = duplicates or {}
    prepared_cache: dict[tuple[Any, ...], results.PreparedUpload] = st.session_state.get(
        _PREPARED, {}
    )
    result_cache: dict[tuple[Any, ...], ImageResult] = st.session_state.get(_RESULTS, {})
    prepared_keys = [(upload.file_id, handle.key) for upload in files]
    result_keys = [(upload.file_id, handle.key, settings.tta) for upload in files]
    missing = [i for i, key in enumerate(result_keys) if key not in result_cache]
    to_classify = [
        i
        for i in missing
        if files[i].file_id not in duplicates and uploads.refusal_reason(files[i].name) is None
    ]
    # Turning TTA on for images classified without it adds only the flipped views.
    to_augment = [
        i
        for i in to_classify
        if settings.tta
        and prepared_keys[i] in prepared_cache
        and (plain := result_cache.get((files[i].file_id, handle.key, False))) is not None
        and plain.analysis is not None
    ]
    augmenting = set(to_augment)
    to_classify = [i for i in to_classify if i not in augmenting]
    to_prepare = [i for i in to_classify if prepared_keys[i] not in prepared_cache]
    fresh_prepared: dict[tuple[Any, ...], results.PreparedUpload] = {}
    fresh_results: dict[tuple[Any, ...], ImageResult] = {}
    if to_augment:
        analyzer = handle.wait()
        with _Progress(len(to_augment) > 1) as progress:
            augmented = results.add_tta(
                analyzer,
                [prepared_cache[prepared_keys[i]] for i in to_augment],
                [result_cache[(files[i].file_id, handle.key, False)] for i in to_augment],
                on_progress=lambda done, total: progress.update(
                    done / max(1, total), f"Test-time augmentation: {done}/{total}"
                ),
            )
        fresh_results.update(
            {result_keys[i]: result for i, result in zip(to_augment, augmented, strict=True)}
        )
    if to_classify:
        analyzer = handle.wait()
        with _Progress(len(to_prepare) > 1 or len(to_classify) > 1) as progress:
            for done, index in enumerate(to_prepare, start=1):
                upload = files[index]
                fresh_prepared[prepared_keys[index]] = results.prepare_upload(
                    analyzer, upload.getvalue(), file_id=upload.file_id, file_name=upload.name
                )
                progress.update(done / len(to_prepare), f"Reading images: {done}/{len(to_prepare)}")
            prepared = [
                fresh_prepared.get(key) or prepared_cache[key]
                for key in (prepared_keys[index] for index in to_classify)
            ]
            step = "Classifying with test-time augmentation" if settings.tta else "Classifying"
            classified = results.classify_uploads(
                analyzer,
                prepared,
                tta=settings.tta,
                on_progress=lambda done, total: progress.update(
                    done / max(1, total), f"{step}: {done}/{total}"
                ),
            )
            fresh_results.update(
                {
                    result_keys[index]: result
                    for index, result in zip(to_classify, classified, strict=True)
                }
            )
    for index in missing:  # in upload order: a duplicate's original comes first
        upload = files[index]
        if (duplicate := duplicates.get(upload.file_id)) is not None:
            first_key = (duplicate.first_id, handle.key, settings.tta)
            first = fresh_results.get(first_key) or result_cache[first_key]
            fresh_results[result_keys[index]] = replace(
                first,
                file_id=upload.file_id,
                file_name=upload.name,
                name_info=read_breakhis_filename(upload.name),
                seconds=0.0,
            )
        elif (reason := uploads.refusal_reason(upload.name)) is not None:
            fresh_results[result_keys[index]] = uploads.refused_result(
                upload.file_id, upload.name, reason
            )
    st.session_state[_PREPARED] = {
        key: fresh_prepared.get(key) or prepared_cache[key]
        for key in prepared_keys
        if key in fresh_prepared or key in prepared_cache
    }
    analysed = [fresh_results.get(key) or result_cache[key] for key in result_keys]
    # Results of the other TTA setting are kept too (switching back is instant); both hold
    # the same display copies, so this costs only their numbers.
    wanted = {upload.file_id for upload in files}
    st.session_state[_RESULTS] = {
        key: value
        for key, value in {**result_cache, **fresh_results}.items()
        if key[0] in wanted and key[1] == handle.key
    }
    _forget_maps(wanted, handle.key)
    return analysed


def with_maps(
    shown: Sequence[ImageResult], handle: ModelHandle, settings: AnalysisSettings
) -> list[ImageResult]:
    """``shown`` (the results on screen) with their maps for ``settings``, computed in one
    network call for those that lack one and cached per (image, model, method, layer,
    target): paging back, or switching back to a setting, costs nothing."""
    maps: dict[tuple[Any, ...], ImageAnalysis] = st.session_state.setdefault(_MAPS, {})
    keys = [_map_key(result.file_id, handle.key, settings) for result in shown]
    prepared = st.session_state.get(_PREPARED, {})
    # A duplicate upload has no prepared copy of its own (it is drawn as a pointer to the
    # earlier file), so it gets no map here.
    missing = [
        i
        for i, result in enumerate(shown)
        if result.ok and keys[i] not in maps and (result.file_id, handle.key) in prepared
    ]
    if missing:
        uploads = [prepared[(shown[index].file_id, handle.key)] for index in missing]
        try:
            with st.spinner(
                f"Computing {plural(len(missing), CAM_METHODS[settings.method] + ' map')}..."
            ):
                mapped = results.explain_results(handle.wait(), uploads, settings)
        except Exception as error:  # the results stay; the details say there is no map
            st.warning(f"The maps could not be computed ({type(error).__name__}: {error}).")
            return list(shown)
        maps.update({keys[index]: m for index, m in zip(missing, mapped, strict=True)})
    return [
        results.with_map(result, maps[key]) if key in maps else result
        for result, key in zip(shown, keys, strict=True)
    ]


def with_cached_maps(
    analysed: Sequence[ImageResult], handle: ModelHandle, settings: AnalysisSettings
) -> list[ImageResult]:
    """``analysed`` with the maps already computed for ``settings`` (none computed here): what
    the results table can say about maps without running the network for every image."""
    maps: dict[tuple[Any, ...], ImageAnalysis] = st.session_state.get(_MAPS, {})
    return [
        results.with_map(result, maps[key])
        if (key := _map_key(result.file_id, handle.key, settings)) in maps
        else result
        for result in analysed
    ]


def _map_key(file_id: str, model_key: Any, settings: AnalysisSettings) -> tuple[Any, ...]:
    return (file_id, model_key, settings.method, settings.layer, settings.target)


def _forget_maps(keep_files: set[str], model_key: Any) -> None:
    maps: dict[tuple[Any, ...], ImageAnalysis] = st.session_state.get(_MAPS, {})
    for key in [key for key in maps if key[0] not in keep_files or key[1] != model_key]:
        del maps[key]


class _Progress:
    """A progress bar while a step runs (none for a single image), removed afterwards."""

    def __init__(self, shown: bool) -> None:
        self._bar = st.progress(0.0, text="Reading images...") if shown else None

    def update(self, fraction: float, text: str) -> None:
        if self._bar is not None:
            self._bar.progress(min(1.0, fraction), text=text)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.empty()


def per_image_choices(name: str) -> dict[str, str]:
    """This session's per-image choices (magnification or case id) by upload id.

    Kept outside widget state because Streamlit forgets the state of widgets that are not
    drawn, and only one page of image details is drawn at a time.
    """
    return st.session_state.setdefault(name, {})


def remember_choice(name: str, file_id: str, widget_key: str) -> None:
    """``on_change`` callback: copy a per-image widget's value into the session's choices."""
    per_image_choices(name)[file_id] = st.session_state[widget_key]


def forget_choices(name: str, keep: set[str]) -> None:
    """Drop choices for images that were removed from the upload."""
    choices = per_image_choices(name)
    for file_id in set(choices) - keep:
        del choices[file_id]
