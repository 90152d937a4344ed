"""A MONAI Deploy application: classify a DICOM series with a bundle and write its ClusCAM explanation as DICOM.

It loads every DICOM file under the input folder (``DICOMDataLoaderOperator``), selects the first series that
the selection rules match (``DICOMSeriesSelectorOperator``; by default the first MR series), stacks it into a
volume (``DICOMSeriesToVolumeOperator``) and hands it to ``ClusCAMOperator``, which writes into the output folder
``<SeriesInstanceUID>_ClusCAM_dicom/`` with ``map/parametric_map.dcm``, ``overlay/IM*.dcm`` and
``report/report.dcm``.

Run it with the SDK's local runner (the application run as a script)::

    python examples/deploy_app/app.py -i <DICOM folder> -o <output folder> -m bundles/phantom_volume_cluscam

``-i``, ``-o`` and ``-m`` are the SDK's own options (the environment variables ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` stand in for them, as in a MONAI Application Package); ``-m``
names the bundle folder. The options of this application come before or after them: ``--method``,
``--num-clusters``, ``--device``, ``--rules`` (a JSON file of selection rules), ``--deidentify``,
``--overwrite``. See ``docs/deploy.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator

from monai_cluscam.deploy import ClusCAMOperator

#: The series explained by default: the first MR series of the study (the shipped bundles are MRI classifiers).
DEFAULT_RULES = """
{
    "selections": [
        {
            "name": "MR series",
            "conditions": {
                "Modality": "(?i)MR"
            }
        }
    ]
}
"""


class ClusCAMApp(Application):
    """DICOM series in, ClusCAM explanation out as a Parametric Map, colour overlays and a Structured Report.

    Args:
        *args: the SDK's application arguments (``argv``).
        method, num_clusters, baseline, device, deidentify, overwrite: passed to ``ClusCAMOperator``.
        rules: the series selection rules (JSON text); default :data:`DEFAULT_RULES`.
        **kwargs: the SDK's application keywords.
    """

    def __init__(
        self,
        *args,
        method: str = "cluscam",
        num_clusters: int | None = None,
        baseline: str | None = None,
        device: str | None = None,
        deidentify: bool = False,
        overwrite: bool = False,
        rules: str = DEFAULT_RULES,
        **kwargs,
    ) -> None:
        self.cluscam_options = {
            "method": method,
            "num_clusters": num_clusters,
            "baseline": baseline,
            "device": device,
            "deidentify": deidentify,
            "overwrite": overwrite,
        }
        self.rules = rules
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        bundle = Path(context.model_path)
        if not (bundle / "configs" / "inference.json").is_file():
            raise FileNotFoundError(
                f"{bundle} is not a bundle folder (no configs/inference.json); pass the bundle with -m, e.g. "
                "-m bundles/phantom_volume_cluscam (or set HOLOSCAN_MODEL_PATH)."
            )
        output_folder.mkdir(parents=True, exist_ok=True)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="loader")
        selector = DICOMSeriesSelectorOperator(self, rules=self.rules, name="selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="to_volume")
        cluscam = ClusCAMOperator(
            self,
            bundle=bundle,
            output_folder=output_folder,
            workdir=context.workdir or None,
            name="cluscam",
            **self.cluscam_options,
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, cluscam, {("image", "image")})
        self.add_flow(selector, cluscam, {("study_selected_series_list", "study_selected_series_list")})


def _options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        add_help=False,
        description="The SDK's options: -i/--input DICOM folder, -o/--output output folder, -m/--model bundle "
        "folder, -l/--log-level, -w/--workdir. This application's options:",
    )
    parser.add_argument("--method", default="cluscam", help="explanation method (default: cluscam)")
    parser.add_argument("--num-clusters", type=int, default=None, help="ClusCAM's K (default: the bundle's)")
    parser.add_argument("--baseline", default=None, help="ClusCAM's baseline: zero, blur or mean (default: bundle's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--rules", type=Path, default=None, help="JSON file of series selection rules")
    parser.add_argument("--deidentify", action="store_true", help="write de-identified DICOM")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier result of the same series")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the application: this application's options are read here, the rest go to the SDK's parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _options()
    if {"-h", "--help"} & set(argv):
        parser.print_help()
        print()
    ours, sdk_args = parser.parse_known_args(argv)
    rules = ours.rules.read_text(encoding="utf-8") if ours.rules is not None else DEFAULT_RULES
    app = ClusCAMApp(
        [sys.executable, str(Path(__file__).resolve()), *sdk_args],
        method=ours.method,
        num_clusters=ours.num_clusters,
        baseline=ours.baseline,
        device=ours.device,
        deidentify=ours.deidentify,
        overwrite=ours.overwrite,
        rules=rules,
    )
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
