"""A real PACS for the tests: Orthanc with its DICOMweb plugin, started on loopback in a temporary folder.

``.ci/run`` installs Debian's ``orthanc`` and ``orthanc-dicomweb``; :func:`orthanc_or_skip` skips a test cleanly
when they are not installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
AE_TITLE = "ORTHANCTEST"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        found = sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


class Orthanc:
    """A running Orthanc: its REST root (``http``), DICOMweb root (``dicomweb``), DICOM port and AE title."""

    def __init__(self, folder: Path, check_calling_aet: bool = False) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = _free_port(), _free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.http}/dicom-web"
        self.ae_title = AE_TITLE
        config = {
            "Name": "monai-cluscam-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": True,
            # with a check, only the modalities listed may store (none are: every C-STORE is refused)
            "DicomAlwaysAllowStore": not check_calling_aet,
            "DicomCheckModalityHost": check_calling_aet,
            "DicomModalities": {},
            "Plugins": [str(_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = (folder / "orthanc.log").open("w")
        self.process = subprocess.Popen([shutil.which("Orthanc"), str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}") from None
                time.sleep(0.2)

    def get(self, path: str):
        with urllib.request.urlopen(self.http + path, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def orthanc_or_skip() -> None:
    if shutil.which("Orthanc") is None or _plugin() is None:
        pytest.skip("Orthanc with its DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb) is not installed")


@contextmanager
def running_orthanc(folder: Path, **kwargs):
    orthanc_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    server = Orthanc(folder, **kwargs)
    try:
        yield server
    finally:
        server.stop()
