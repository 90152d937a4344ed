"""Sending the DICOM results to a PACS: DICOMweb STOW-RS (``dicomweb-client``) or DIMSE C-STORE (``pynetdicom``).

:func:`send_dicom` stores every given file at one destination and records what the PACS accepted in a JSON file
beside the results (``dicom_sent.json``), so a rerun after a refusal or an outage sends only what is missing and
never an object twice. The files are never moved or deleted: a failure leaves them on disk and says what to do.

    >>> peer = PacsDestination.parse_aet("ORTHANC@127.0.0.1:4242")
    >>> peer.kind, peer.ae_title, peer.port, peer.label
    ('dimse', 'ORTHANC', 4242, 'ORTHANC@127.0.0.1:4242')
    >>> PacsDestination.parse_url("localhost:8042/dicom-web")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: PACS URL 'localhost:8042/dicom-web' has no scheme; ... e.g. http://localhost:8042/dicom-web.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pydicom

from .files import atomic_write, is_output_dir

__all__ = ["SENT_RECORD", "PacsDestination", "PacsError", "SendReport", "referenced_source_files", "send_dicom"]

#: The record of what each destination accepted, written into the output folder: ``{destination: {SOP
#: Instance UID: file}}``.
SENT_RECORD = "dicom_sent.json"
#: AE titles: at most 16 characters of DICOM's default repertoire, no backslash, not all spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_BATCH = 16  # instances per STOW-RS request: bounded memory, and progress recorded as it goes


class PacsError(OSError):
    """The PACS refused objects or could not be reached; the files are on disk and the record says what went."""


def _check_ae_title(title: str, what: str) -> str:
    if not isinstance(title, str) or not _AE_TITLE.match(title) or not title.strip():
        raise ValueError(
            f"{what} {title!r} is not a DICOM AE title: 1 to 16 characters, letters, digits, spaces and "
            "punctuation but no backslash (e.g. ORTHANC)."
        )
    return title.strip()


@dataclass(frozen=True)
class PacsDestination:
    """Where :func:`send_dicom` stores: a DICOMweb root (``kind="dicomweb"``, ``address`` the URL) or a DIMSE
    peer (``kind="dimse"``: ``address``, ``port``, the peer's ``ae_title``, our ``calling_ae_title``)."""

    kind: str
    address: str
    port: int | None = None
    ae_title: str | None = None
    calling_ae_title: str = "MONAICLUSCAM"

    @classmethod
    def parse_url(cls, url: str) -> PacsDestination:
        """A DICOMweb root such as ``http://host:8042/dicom-web`` (Orthanc) or ``https://host/dicomweb``."""
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https"):
            example = f"http://{url}" if "://" not in str(url) else "http://localhost:8042/dicom-web"
            what = "has no scheme" if "://" not in str(url) else f"has scheme {parts.scheme!r}, not http(s)"
            raise ValueError(f"PACS URL {url!r} {what}; give the DICOMweb root with it, e.g. {example}.")
        if not parts.netloc:
            raise ValueError(f"PACS URL {url!r} names no host; e.g. http://localhost:8042/dicom-web.")
        return cls("dicomweb", str(url).rstrip("/"))

    @classmethod
    def parse_aet(cls, text: str, calling_ae_title: str = "MONAICLUSCAM") -> PacsDestination:
        """A DIMSE peer written ``AET@HOST:PORT`` (e.g. ``ORTHANC@127.0.0.1:4242``)."""
        match = re.match(r"^(?P<aet>[^@]*)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d+)$", str(text))
        if match is None:
            raise ValueError(f"PACS address {text!r} is not AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242.")
        port = int(match["port"])
        if not 0 < port < 65536:
            raise ValueError(f"PACS address {text!r}: port {port} is not between 1 and 65535.")
        return cls(
            "dimse",
            match["host"].strip("[]"),
            port,
            _check_ae_title(match["aet"], "The PACS's AE title"),
            _check_ae_title(calling_ae_title, "The calling AE title"),
        )

    @property
    def label(self) -> str:
        """How the record and the messages name this destination."""
        return self.address if self.kind == "dicomweb" else f"{self.ae_title}@{self.address}:{self.port}"


@dataclass
class SendReport:
    """What :func:`send_dicom` did at one destination.

    Attributes:
        destination: the destination's label (URL, or ``AET@HOST:PORT``).
        sent: the files the PACS accepted in this call.
        already: the files the record shows as accepted before (not sent again).
        record: the record file.
    """

    destination: str
    sent: list[Path] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    record: Path | None = None


def _record_folder(paths: list[Path]) -> Path:
    """The output folder (holding the output marker) the results lie in, else the files' common folder."""
    if not paths:
        return Path.cwd()
    for path in paths:
        for folder in path.parents:
            if is_output_dir(folder):
                return folder
    return Path(os.path.commonpath([p.parent for p in paths]))


def _read_record(record: Path) -> dict[str, dict[str, str]]:
    if not record.is_file():
        return {}
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        raise PacsError(f"{record} cannot be read ({err}); move it away to send everything again.") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PacsError(f"{record} is not a record of sent objects; move it away to send everything again.")
    return data


def _write_record(record: Path, data: dict) -> None:
    payload = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    atomic_write(record, lambda stream: stream.write(payload), overwrite=True)


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _uid(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _stow(destination: PacsDestination, files: list[Path], accepted: Callable[[list[Path]], None]) -> None:
    try:
        from dicomweb_client.api import DICOMwebClient
        from requests import RequestException
    except ImportError as err:
        raise ImportError("Sending by DICOMweb needs dicomweb-client: pip install 'monai-cluscam[pacs]'.") from err
    client = DICOMwebClient(url=destination.address, timeout=60)
    for start in range(0, len(files), _BATCH):
        batch = files[start : start + _BATCH]
        datasets = [_read(p) for p in batch]
        try:
            response = client.store_instances(datasets=datasets)
        except RequestException as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            why = f"HTTP {status}" if status else type(err).__name__
            raise PacsError(f"{destination.label} did not store {len(batch)} object(s) ({why}: {err})") from err
        failed = {str(item.ReferencedSOPInstanceUID): int(getattr(item, "FailureReason", 0))
                  for item in getattr(response, "FailedSOPSequence", [])}
        accepted([p for p, ds in zip(batch, datasets, strict=True) if str(ds.SOPInstanceUID) not in failed])
        if failed:
            reasons = ", ".join(f"0x{code:04X}" for code in sorted(set(failed.values())))
            raise PacsError(f"{destination.label} refused {len(failed)} object(s) (failure reason {reasons})")


def _c_store(destination: PacsDestination, files: list[Path], accepted: Callable[[list[Path]], None]) -> None:
    try:
        from pynetdicom import AE
    except ImportError as err:
        raise ImportError("Sending by C-STORE needs pynetdicom: pip install 'monai-cluscam[pacs]'.") from err
    datasets = [_read(p) for p in files]
    ae = AE(ae_title=destination.calling_ae_title)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets}))
    assoc = ae.associate(destination.address, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached"
        raise PacsError(f"{destination.label} {why} (calling AE title {destination.calling_ae_title})")
    refused: list[str] = []
    try:
        for path, ds in zip(files, datasets, strict=True):
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise PacsError(f"{destination.label} dropped the connection while storing {path.name}")
            if code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success, or stored with a warning
                accepted([path])
            else:
                refused.append(f"{path.name} (status 0x{code:04X})")
    finally:
        if assoc.is_established:
            assoc.release()
    if refused:
        raise PacsError(f"{destination.label} refused {len(refused)} object(s): {', '.join(refused[:5])}")


def referenced_source_files(parametric_map: str | os.PathLike, source: str | os.PathLike) -> list[Path]:
    """The files under ``source`` (a DICOM file or folder) of the scan slices a Parametric Map references: what to
    send with the results so the study opens complete in a PACS that does not hold the scan yet (a PACS that does
    keeps one copy: the objects are the same, with the same SOP Instance UIDs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = pydicom.dcmread(parametric_map, stop_before_pixels=True)
    wanted = {str(item.ReferencedSOPInstanceUID) for series in pm.get("ReferencedSeriesSequence", [])
              for item in series.get("ReferencedInstanceSequence", [])}
    root = Path(source)
    candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [p for p in candidates if pydicom.misc.is_dicom(p) and _uid(p) in wanted]


def send_dicom(
    files: Sequence[str | os.PathLike],
    destination: PacsDestination | str,
    *,
    record: str | os.PathLike | None = None,
) -> SendReport:
    """Store DICOM files at a PACS, each once: what ``record`` shows as accepted there before is not sent again.

    Args:
        files: the DICOM files (the scan written for a non-DICOM input, the Parametric Map, the colour overlays,
            the report).
        destination: a :class:`PacsDestination`, a DICOMweb URL (``http://host:8042/dicom-web``) or
            ``AET@HOST:PORT`` for C-STORE.
        record: the JSON record of what each destination accepted (updated as objects are accepted; default
            :data:`SENT_RECORD` in the output folder the results lie in, else in the files' common folder; never
            inside a DICOM result folder, which holds DICOM only).

    Returns:
        A :class:`SendReport`.

    Raises:
        ValueError: a malformed destination (a URL without a scheme, an AE title over 16 characters, ...).
        PacsError: the PACS refused objects, rejected the association, or could not be reached. What it
            accepted until then is in the record; the files stay where they are, and the same call again sends
            only what is missing.
        ImportError: the client library for the destination's kind is not installed (the ``pacs`` extra).
    """
    if isinstance(destination, str):
        destination = (PacsDestination.parse_url(destination) if "://" in destination or "@" not in destination
                       else PacsDestination.parse_aet(destination))
    paths = [Path(f).resolve() for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot send {missing[0]}: no such file (of {len(missing)} missing).")
    target = Path(record) if record is not None else _record_folder(paths) / SENT_RECORD
    data = _read_record(target)
    done = data.setdefault(destination.label, {})
    report = SendReport(destination.label, record=target)
    pending = []
    for path in paths:
        (report.already if _uid(path) in done else pending).append(path)
    base = target.parent.resolve()

    def accepted(batch: list[Path]) -> None:
        for path in batch:
            done[_uid(path)] = os.path.relpath(path, base)
            report.sent.append(path)
        _write_record(target, data)

    if not pending:
        return report
    send = _stow if destination.kind == "dicomweb" else _c_store
    try:
        send(destination, pending, accepted)
    except PacsError as err:
        left = len(pending) - len(report.sent)
        raise PacsError(
            f"{err}. {len(report.sent)} of {len(pending)} object(s) were stored this time; the {left} others stay "
            f"on disk and {target} records what went: check that the PACS is up and accepts this sender, then "
            "run the same command again to send only what is missing."
        ) from err.__cause__
    except OSError as err:  # a socket error below the client libraries
        raise PacsError(
            f"{destination.label} could not be reached ({err}); the files stay on disk: run the same command "
            "again once it is up."
        ) from err
    return report
