"""Turn a run's served model into a shareable ``.zip`` and print the lines a colleague uses.

::

    python -m model.publish runs/<name> --out model.zip
    python -m model.publish runs/<name> --out model.zip --url https://host/models/model.zip
    python -m model.publish runs/<name> --out model.zip --hf-repo owner/name

``RUN_OR_ARTIFACT`` is a run folder (its served ``model/``), an artifact folder
(``model.keras`` + ``model_card.json``) or an artifact ``.zip``. The weights are checked
against the checksum in the card first (a damaged model is not shared), the ``.zip`` is
written atomically by :func:`model.artifact.export_zip` (byte for byte the same for the same
model, so re-publishing keeps a pinned URL valid), and its SHA-256 is printed with the exact
locations to use (:mod:`model.sources`):

* ``https://HOST/PATH/model.zip#sha256=<hex>`` once the file is served over https (``--url``
  fills in where; without it the line has a placeholder);
* ``hf://owner/name@<commit>`` with ``--hf-repo``: the file is uploaded to the Hugging Face
  Hub as ``model.zip`` with ``huggingface_hub.HfApi().upload_file`` (the repository is
  created if needed; it needs a token with write access: ``hf auth login`` or ``HF_TOKEN``).

Without a token, without network, or with ``HF_HUB_OFFLINE=1`` the upload fails with a
message saying so; the ``.zip`` is written before, and can be shared by URL all the same.

Example (the printed lines; not run here)::

    $ python -m model.publish runs/quick --out model.zip --url https://example.org/m/model.zip
    Wrote model.zip (98.1 MiB): quick-20260101-000000 ...
    SHA-256: 3f7a...
    ...
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from model.artifact import export_zip, read_card, read_card_from_zip
from model.card import ModelCard
from model.errors import ArtifactError, ModelSourceError, PublishError
from model.files import file_sha256, write_atomically
from model.runs import CARD_FILE, MODEL_FILE, is_run_with_model, served_model_dir
from model.sources import DEFAULT_HUB_FILE, parse_model_location
from model.trust import assess_model

__all__ = ["Published", "main", "publish", "share_lines", "upload_to_hub"]


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote: the ``.zip``, its checksum and the model's card."""

    path: Path
    sha256: str
    card: ModelCard

    def url_location(self, url: str | None = None) -> str:
        """The pinned URL line (``url`` is where the file will be served).

        Example:
            >>> Published(Path("model.zip"), "ab" * 32, ModelCard(name="demo")).url_location()
            'https://HOST/PATH/model.zip#sha256=abababababababababababababababababababababababababababababababab'
        """
        return f"{url or f'https://HOST/PATH/{self.path.name}'}#sha256={self.sha256}"


def publish(source: str | Path, out: str | Path) -> Published:
    """Check the model at ``source`` and write it as one shareable ``.zip`` at ``out``.

    Raises:
        ArtifactError: ``source`` is not a readable artifact (the loader's messages).
        PublishError: its weights do not match its card, or ``out`` is the source itself.
    """
    source, out = Path(source), Path(out)
    if source.is_file() and zipfile.is_zipfile(source):
        card = _check_zip(source)
        if source.resolve() != out.resolve():
            write_atomically(out, lambda stream: _copy(source, stream))
    else:
        folder = served_model_dir(source) if is_run_with_model(source) else source
        card = read_card(folder)
        if not (folder / MODEL_FILE).is_file():
            raise PublishError(f"model artifact {folder} is missing {MODEL_FILE}")
        _check_weights(card, file_sha256(folder / MODEL_FILE), str(folder))
        if out.resolve().parent == folder.resolve():
            # Not fatal, but a .zip inside the artifact would be mistaken for part of it.
            raise PublishError(f"--out {out} is inside the artifact folder; write it elsewhere")
        export_zip(folder, out)
    return Published(path=out, sha256=file_sha256(out), card=card)


def share_lines(published: Published, url: str | None = None) -> list[str]:
    """What to tell a colleague: the checksum, the URL line and how to use it."""
    location = published.url_location(url)
    where = "" if url else " (replace HOST/PATH with where you put the file)"
    trust = assess_model(published.card)
    lines = [
        f"Wrote {published.path} ({published.path.stat().st_size / 2**20:,.1f} MiB): "
        f"{published.card.name}",
        f"Evidence: {trust.title}: {trust.reason}.",
        f"SHA-256: {published.sha256}",
        "",
        f"Share by URL: serve {published.path.name} over https, then a colleague uses{where}",
        f"  {location}",
        "like this:",
        f"  streamlit run app/main.py -- --model '{location}'",
        f"  BCD_MODEL='{location}' streamlit run app/main.py",
        f"  python -m model.batch ... --model '{location}'",
        "or pastes it into the app's sidebar (Use another model > Model from URL or hf://).",
    ]
    if not published.card.is_trained:
        lines.insert(2, "Warning: this card says the model was never trained.")
    return lines


def upload_to_hub(published: Published, repo_id: str, private: bool = False) -> str:
    """Upload the ``.zip`` as ``model.zip`` to the Hub repository ``repo_id`` (created if
    needed); returns the pinned location ``hf://repo_id@<commit>``.

    Raises:
        PublishError: no token, offline mode, the Hub unreachable, or the Hub refused.
    """
    location = parse_model_location(f"hf://{repo_id}")  # a malformed id fails before network
    assert location.repo_id is not None
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors as hub_errors

    keep = f"; {published.path} is written and can be shared by URL meanwhile"
    if constants.HF_HUB_OFFLINE:
        raise PublishError(f"HF_HUB_OFFLINE is set: nothing can be uploaded{keep}")
    if huggingface_hub.get_token() is None:
        raise PublishError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token with "
            f"write access to {repo_id}){keep}"
        )
    api = huggingface_hub.HfApi(library_name="breakhis-resnet50")
    try:
        api.create_repo(location.repo_id, exist_ok=True, private=private)
        commit = api.upload_file(
            path_or_fileobj=str(published.path),
            path_in_repo=DEFAULT_HUB_FILE,
            repo_id=location.repo_id,
            commit_message=f"Publish {published.card.name} (sha256 {published.sha256[:12]})",
        )
    except hub_errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = " (the token lacks write access?)" if status in (401, 403) else ""
        raise PublishError(f"the Hub refused the upload: HTTP {status}{hint}{keep}") from error
    except Exception as error:  # network errors: httpx's transport errors are no OSErrors
        raise PublishError(
            f"could not upload to the Hub at {constants.ENDPOINT} ({type(error).__name__}: "
            f"{error}){keep}"
        ) from error
    return f"hf://{location.repo_id}@{commit.oid}"


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m model.publish",
        description="Turn a run's served model into a shareable .zip; print its SHA-256 and "
        "the https:// and hf:// lines a colleague uses.",
    )
    parser.add_argument("source", metavar="RUN_OR_ARTIFACT", help="run folder, artifact or .zip")
    parser.add_argument("--out", required=True, type=Path, help="the .zip to write")
    parser.add_argument("--url", help="where the .zip will be served (https://.../model.zip)")
    parser.add_argument("--hf-repo", metavar="OWNER/NAME", help="also upload to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    args = parser.parse_args(argv)
    try:
        if args.url is not None:  # refused URLs (http://, a typo) fail before any work
            parse_model_location(f"{args.url}#sha256={'0' * 64}")
        if args.hf_repo is not None:
            parse_model_location(f"hf://{args.hf_repo}")
        published = publish(args.source, args.out)
        print("\n".join(share_lines(published, args.url)), file=out)
        if args.hf_repo is not None:
            pinned = upload_to_hub(published, args.hf_repo, private=args.private)
            print(
                "",
                f"Uploaded to the Hub as {args.hf_repo}/{DEFAULT_HUB_FILE}. Share:",
                f"  {pinned}        # this exact upload (pinned commit)",
                f"  hf://{args.hf_repo}        # whatever is newest on its main branch",
                f"  streamlit run app/main.py -- --model {pinned}",
                sep="\n",
                file=out,
            )
    except (ArtifactError, PublishError, ModelSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _check_zip(path: Path) -> ModelCard:
    with path.open("rb") as handle:
        card = read_card_from_zip(handle, str(path))
    with zipfile.ZipFile(path) as archive:
        members = {Path(name).name: name for name in archive.namelist()}
        if MODEL_FILE not in members:
            raise PublishError(f"{path} lacks {MODEL_FILE}: not a model artifact")
        digest = hashlib.sha256()
        with archive.open(members[MODEL_FILE]) as weights:
            for chunk in iter(lambda: weights.read(1 << 20), b""):
                digest.update(chunk)
    _check_weights(card, digest.hexdigest(), str(path))
    return card


def _check_weights(card: ModelCard, actual: str, where: str) -> None:
    if not card.model_sha256:
        raise PublishError(
            f"the card in {where} records no weights checksum ({CARD_FILE}: model_sha256), so "
            "a colleague could not tell a damaged copy; re-save it with model.artifact."
            "save_artifact"
        )
    if actual != card.model_sha256:
        raise PublishError(
            f"{MODEL_FILE} in {where} does not match the checksum in its card: the file is "
            "damaged or was replaced; not publishing it"
        )


def _copy(source: Path, stream: IO[bytes]) -> None:
    with source.open("rb") as handle:
        shutil.copyfileobj(handle, stream, 1 << 20)


if __name__ == "__main__":
    sys.exit(main())
