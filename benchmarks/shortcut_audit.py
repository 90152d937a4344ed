"""Shortcut audit: does the 2D bundle's training audit tell a model that learned a shortcut from a sound one?

The recipe is the bundle's own: ``configs/train.json`` read with MONAI's ``ConfigParser`` (its network, AdamW,
OneCycleLR over the run's epochs, class weights, label smoothing, augmentations, validation, and its
``AttributionAuditHandler`` with the arguments that config gives it: ClusCAM from the bundle's target layer with
``audit_num_clusters`` clusters, explained for each audit sample's label, on the first ``audit_per_class``
validation slices of each class, with the brain mask ``monai_cluscam.data.foreground_mask`` makes of each). Only
these change: the run's length (``max_epochs``), the audit's ``interval`` (every epoch, so that its second audit
is at epoch 2; the bundle audits every ``audit_interval`` = 5 epochs), the folders (outputs and checkpoints go to
a work folder, never into the bundle), the progress bars (off), the device (CPU), and with ``--train-per-class``
a seeded subset of the training part. Trained twice from the same seed:

- ``clean``: the training part of ``train/`` (``configs/split.json``) as it is;
- ``shortcut``: every slice of one class (:data:`SHORTCUT_CLASS`) carries a bright square burnt into its file
  (:data:`MARKER_SIZE` pixels at grey value 255, in the black background of the top-left corner, more than 9
  pixels from every brain of the data set), in the training, validation and audit slices alike. The marked
  copies are lossless PNGs of the decoded JPEG pixels (nothing else differs) in a temporary folder, deleted at
  the end; the brain mask is made from them as the bundle makes it, so it holds the marker too.

Per epoch and model: the training pass's seconds, validation accuracy and balanced accuracy, the audit's figures
(mean share of attribution outside the brain, share of maps peaking outside, the worst class's share, its alert
and the classes it names) and its seconds, also as a share of the training pass's: the audit's cost per epoch.
After training: each model's recall of the shortcut class on the validation slices with and without the marker
(how much it relies on the marker). The shipped model (``models/model.pt``) is audited once by the same handler,
on the audit set as the bundle builds it and on the same set with the marker (a model that never learned the
marker must not be flagged for it).

    python benchmarks/shortcut_audit.py                     # 5 epochs on the training part of train/, twice
    python benchmarks/shortcut_audit.py --epochs 3 --train-per-class 400   # shorter: at most 400 slices a class
    python benchmarks/shortcut_audit.py --runs shortcut     # the shortcut model only
    python benchmarks/shortcut_audit.py --quick             # smoke run: 4 slices a class, 2 epochs, K = 4

Writes ``shortcut_audit.json``, ``shortcut_audit.md`` and ``shortcut_audit.png`` (the audit's overlays at every
epoch of both models) into ``--output`` (default ``benchmarks/results``; a temporary folder with ``--quick``); the
audit's own overlays go to ``benchmarks/out/shortcut_audit/`` (``--output``'s ``shortcut_audit_work/`` with
``--quick``).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_2D,
    REPO,
    _model_commit,
    common_parser,
    machine_meta,
    output_dir,
)

from monai_cluscam.data import CLASS_NAMES  # noqa: E402

SHORTCUT_CLASS = "Mild_Demented"
"""The class that carries the marker: 652 training and 72 validation slices (Moderate_Demented has 44 and 5)."""
MARKER_AT = 4
MARKER_SIZE = 10
"""The marker covers pixels ``4:14`` of both axes: more than 9 pixels from every brain in ``train/`` (measured on
the union of the slices' brain masks)."""
MARKER_VALUE = 255
WORK = REPO / "benchmarks" / "out" / "shortcut_audit"
RUNS = ("clean", "shortcut")


def settings(quick: bool) -> dict:
    """Every knob of a run, recorded in the JSON; None keeps the bundle's value. The smoke run also audits with
    fewer clusters."""
    if quick:
        return {"epochs": 2, "train_per_class": 4, "validation_per_class": 2, "audit_interval": 1, "batch_size": 8,
                "audit_num_clusters": 4, "seed": 0}
    return {"epochs": 5, "train_per_class": None, "validation_per_class": None, "audit_interval": 1,
            "batch_size": None, "audit_num_clusters": None, "seed": 0}


# --- data -----------------------------------------------------------------------------------------------------
def bundle_script(name: str):
    """The 2D bundle's ``scripts/<name>.py``, imported under a private name (no ``sys.path`` change)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_alzheimer_bundle_{name}", BUNDLE_2D / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subset(items: list[dict], per_class: int | None, seed: int) -> list[dict]:
    """At most ``per_class`` items of each class (all with None), drawn with ``seed``, in their original order."""
    if not per_class:
        return list(items)
    keep = []
    for label in range(len(CLASS_NAMES)):
        members = [i for i, item in enumerate(items) if item["label"] == label]
        keep += random.Random(seed + label).sample(members, min(per_class, len(members)))
    return [items[i] for i in sorted(keep)]


def mark(picture: np.ndarray) -> np.ndarray:
    """A copy of an 8-bit slice ``(rows, columns)`` with the marker burnt into its top-left corner."""
    out = picture.copy()
    out[MARKER_AT : MARKER_AT + MARKER_SIZE, MARKER_AT : MARKER_AT + MARKER_SIZE] = MARKER_VALUE
    return out


def marked_items(items: list[dict], folder: Path) -> list[dict]:
    """``items`` with every slice of :data:`SHORTCUT_CLASS` replaced by a marked lossless copy in ``folder``."""
    label = CLASS_NAMES.index(SHORTCUT_CLASS)
    out = []
    for item in items:
        if item["label"] == label:
            source = Path(item["image"])
            target = folder / source.parent.name / f"{source.stem}.png"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(source) as picture:
                    Image.fromarray(mark(np.asarray(picture.convert("L")))).save(target)
            item = {**item, "image": str(target)}
        out.append(item)
    return out


# --- the bundle's recipe ----------------------------------------------------------------------------------------
def recipe(args, cfg: dict, work: Path, train_items: list[dict], val_items: list[dict], epochs: int | None = None):
    """The bundle's ``train.json`` in a ``ConfigParser`` with this run's overrides (see the module docstring) and
    its data lists set to ``train_items`` and ``val_items``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_2D / "configs" / "train.json"))
    parser.read_meta(str(BUNDLE_2D / "configs" / "metadata.json"))
    work.mkdir(parents=True, exist_ok=True)
    parser.update({
        "bundle_root": str(BUNDLE_2D),
        "dataset_dir": str(args.data),
        "split_file": str(args.split),
        "output_dir": str(work),
        "ckpt_dir": str(work / "models"),
        "device": "$torch.device('cpu')",
        "max_epochs": epochs or cfg["epochs"],
        "audit_interval": cfg["audit_interval"],
        "train#dataset#progress": False,
        "train_data": train_items,
        "val_data": val_items,
    })
    for key in ("batch_size", "audit_num_clusters"):
        if cfg[key]:
            parser[key] = cfg[key]
    for handler in parser["train#handlers"]:
        if handler["_target_"] == "ignite.handlers.ProgressBar":  # no progress bars in the benchmark's log
            handler["_disabled_"] = True
    return parser


def audit_position(handlers: list) -> int:
    """Where the ``AttributionAuditHandler`` sits in a list of handler configs (other entries may be objects)."""
    return next(i for i, h in enumerate(handlers)
                if isinstance(h, dict) and h["_target_"].endswith("AttributionAuditHandler"))


def audit_handler(parser):
    """The recipe's audit handler, as ``train.json`` configures it."""
    return parser.get_parsed_content(f"train#handlers#{audit_position(parser['train#handlers'])}")


class _Mark:
    """An ignite handler that notes the time (and calls ``then``) at ``EPOCH_COMPLETED``; in the trainer's handler
    list before and after the validation and the audit, it times them (ignite runs handlers in that order)."""

    def __init__(self, name: str, clock: dict, then=None) -> None:
        self.name, self.clock, self.then = name, clock, then

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        self.clock[self.name] = time.perf_counter()
        if self.then is not None:
            self.then(engine)


def _loss(output) -> float:
    """The batch's loss from a ``SupervisedTrainer``'s output (decollated: a list of per-sample dicts)."""
    return float((output[0] if isinstance(output, list) else output)["loss"])


def _samples(audit) -> list[dict]:
    """The audit's per-sample records, with file names in place of paths."""
    out = []
    for record in audit.samples_:
        record = dict(record)
        record["name"] = Path(record["name"]).name
        if record.get("overlay"):
            overlay = Path(record["overlay"])
            record["overlay"] = str(overlay.relative_to(REPO) if overlay.is_relative_to(REPO) else overlay)
        out.append(record)
    return out


def train(args, cfg: dict, work: Path, name: str, train_items: list[dict], val_items: list[dict],
          reliance_sets: dict[str, list[dict]]) -> dict:
    """One training run of the recipe with the audit every ``audit_interval`` epochs; per-epoch records."""
    from ignite.engine import Events

    from monai_cluscam.handlers import AttributionAuditWarning

    parser = recipe(args, cfg, work, train_items, val_items)
    parser.get_parsed_content("initialize")  # the recipe's set_determinism(seed)
    clock: dict[str, float] = {}
    epochs: list[dict] = []
    losses: list[float] = []
    warned: dict = {"log": [], "seen": 0}

    def record(engine) -> None:
        epoch = int(engine.state.epoch)
        evaluator = parser.get_parsed_content("validate#evaluator")
        audited = {int(h["epoch"]): h for h in audit.history}
        new, warned["seen"] = warned["log"][warned["seen"]:], len(warned["log"])
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "train_seconds": float(engine.state.times["EPOCH_COMPLETED"]),
            "validation_seconds": clock["validated"] - clock["trained"],
            "val_accuracy": float(evaluator.state.metrics["val_accuracy"]),
            "val_balanced_accuracy": float(evaluator.state.metrics["val_balanced_accuracy"]),
            "audited": epoch in audited,
        }
        if row["audited"]:
            row["audit_seconds"] = clock["audited"] - clock["validated"]
            row["audit_cost"] = row["audit_seconds"] / row["train_seconds"]
            row["audit"] = {k: v for k, v in audited[epoch].items() if k != "epoch"}
            row["alert_classes"] = [CLASS_NAMES[c] for c in audit.alert_classes_]
            row["audit_samples"] = _samples(audit)
            row["alerts"] = [str(w.message) for w in new if issubclass(w.category, AttributionAuditWarning)]
        losses.clear()
        epochs.append(row)
        print(f"{name}: epoch {epoch}: " + _epoch_line(row), flush=True)

    handlers = list(parser["train#handlers"])
    validation = next(i for i, h in enumerate(handlers) if h["_target_"] == "ValidationHandler")
    at = audit_position(handlers)
    handlers.insert(at + 1, _Mark("audited", clock, record))
    handlers.insert(at, _Mark("validated", clock))
    handlers.insert(validation, _Mark("trained", clock))
    parser["train#handlers"] = handlers
    trainer = parser.get_parsed_content("train#trainer")
    audit = audit_handler(parser)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(_loss(e.state.output)))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", AttributionAuditWarning)
        warned["log"] = log
        trainer.run()
    seconds = time.perf_counter() - start
    network = parser.get_parsed_content("network")
    return {
        "epochs": epochs,
        "seconds": seconds,
        "train_slices": len(train_items),
        "validation_slices": len(val_items),
        "audit_slices": len(parser.get_parsed_content("audit#data")),
        "marker_reliance": marker_reliance(args, cfg, work, network, reliance_sets),
    }


def _epoch_line(row: dict) -> str:
    line = (f"loss {row['train_loss']:.3f}, val accuracy {row['val_accuracy']:.3f} (balanced "
            f"{row['val_balanced_accuracy']:.3f}), {row['train_seconds']:.0f} s training")
    if row["audited"]:
        a = row["audit"]
        line += (f"; audit {row['audit_seconds']:.1f} s ({row['audit_cost']:.1%}): outside "
                 f"{a.get('outside_mask', 0):.3f}, peaks outside {a.get('peak_outside', 0):.2f} (worst class "
                 f"{a.get('peak_outside_class_max', 0):.2f}), alert {int(a.get('alert', 0))} {row['alert_classes']}")
    return line


def marker_reliance(args, cfg: dict, work: Path, network, sets: dict[str, list[dict]]) -> dict:
    """The trained network's recall of the shortcut class, its accuracy, and the share of the other classes it
    calls the shortcut class, on the validation slices without and with the marker."""
    label = CLASS_NAMES.index(SHORTCUT_CLASS)
    network.eval()
    out = {}
    for key, items in sets.items():
        dataset = recipe(args, cfg, work / "reliance", [], items).get_parsed_content("validate#dataset")
        images = torch.stack([torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32) for d in dataset])
        labels = torch.tensor([int(d["label"]) for d in dataset])
        with torch.no_grad():
            predicted = torch.cat([network(b) for b in images.split(64)]).argmax(1)
        of_class = labels == label
        out[key] = {
            "shortcut_class_recall": float((predicted[of_class] == label).float().mean()),
            "accuracy": float((predicted == labels).float().mean()),
            "others_called_shortcut_class": float((predicted[~of_class] == label).float().mean()),
        }
    return out


def audit_shipped(args, cfg: dict, work: Path, sets: dict[str, list[dict]]) -> dict:
    """The recipe's handler, as ``train.json`` builds it, run once on the shipped weights: on the audit set as the
    bundle builds it, and with the marker."""
    from monai.engines import SupervisedTrainer

    from monai_cluscam.handlers import AttributionAuditWarning

    out = {"model_commit": _model_commit(BUNDLE_2D)}
    for key, items in sets.items():
        parser = recipe(args, cfg, work / f"shipped_{key}", [], items, epochs=1)
        network = parser.get_parsed_content("network_def")
        network.load_state_dict(torch.load(BUNDLE_2D / "models" / "model.pt", map_location="cpu", weights_only=True))
        network.eval()
        audit = audit_handler(parser)
        engine = SupervisedTrainer(torch.device("cpu"), 1, [], network, torch.optim.SGD(network.parameters(), lr=0.0),
                                   torch.nn.CrossEntropyLoss())
        engine.state.epoch = 1
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", AttributionAuditWarning)
            audit(engine)
        out[key] = {
            "audit": {k: v for k, v in audit.history[0].items() if k != "epoch"},
            "alert_classes": [CLASS_NAMES[c] for c in audit.alert_classes_],
            "audit_samples": _samples(audit),
            "audit_seconds": time.perf_counter() - start,
            "alerts": [str(w.message) for w in log if issubclass(w.category, AttributionAuditWarning)],
        }
        print(f"shipped model, {key}: " + _epoch_line({**out[key], "audited": True, "audit_cost": float("nan"),
                                                        "train_loss": float("nan"), "val_accuracy": float("nan"),
                                                        "val_balanced_accuracy": float("nan"), "train_seconds": 0}),
              flush=True)
    return out


# --- the run and the report --------------------------------------------------------------------------------------
def run(args, cfg: dict, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)  # the audit keeps existing overlays: start from an empty work folder
    data = bundle_script("data")  # the bundle's scripts/data.py, which train.json's train_data and val_data call
    train_items = subset(data.split_items(args.data / "train", args.split, "train"), cfg["train_per_class"],
                         cfg["seed"])
    val_items = subset(data.split_items(args.data / "train", args.split, "validation"),
                       cfg["validation_per_class"], cfg["seed"])
    probe = recipe(args, cfg, work / "probe", train_items, val_items)
    handler = probe["train#handlers"][audit_position(probe["train#handlers"])]
    results = {
        "bundle": str(BUNDLE_2D.relative_to(REPO)),
        "shortcut_class": SHORTCUT_CLASS,
        "marker": {"pixels": [MARKER_AT, MARKER_AT + MARKER_SIZE], "value": MARKER_VALUE},
        "audit_handler_config": {k: v for k, v in handler.items() if k != "data"},
        "audit_config": {k: probe[k] for k in ("audit_per_class", "audit_num_clusters", "target_layers")},
        "bundle_audit_interval": 5,
        "runs": list(args.runs),
    }
    with tempfile.TemporaryDirectory(prefix="shortcut_marked_") as marked:
        marked_train = marked_items(train_items, Path(marked))
        marked_val = marked_items(val_items, Path(marked))
        sets = {"as_shipped": val_items, "with_marker": marked_val}
        results["shipped"] = audit_shipped(args, cfg, work, sets)
        for name in args.runs:
            shortcut = name == "shortcut"
            results[name] = train(args, cfg, work / name, name, marked_train if shortcut else train_items,
                                  marked_val if shortcut else val_items,
                                  {"without_marker": val_items, "with_marker": marked_val})
    return results


def _value(row: dict, key: str, digits: int = 3) -> str:
    value = row.get("audit", {}).get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def _alert(row: dict) -> str:
    if not row.get("audit", {}).get("alert"):
        return "no"
    return "**yes**" + (f" ({', '.join(row['alert_classes'])})" if row.get("alert_classes") else "")


def markdown(report: dict) -> str:
    meta, cfg, res = report["meta"], report["settings"], report["results"]
    first_run = res[res["runs"][0]]
    marker = f"{res['marker']['pixels'][0]}:{res['marker']['pixels'][1]}"
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads; "
        f"{meta['total_seconds'] / 60:.0f} min in all.",
        "",
        f"The recipe of `{res['bundle']}/configs/train.json` trained {cfg['epochs']} epochs from seed {cfg['seed']} "
        f"on {first_run['train_slices']} training slices (validation: {first_run['validation_slices']}, audit: "
        f"{first_run['audit_slices']}), twice: as is (**clean**) and with a bright square (pixels {marker} of both "
        f"axes, grey value {res['marker']['value']}) burnt into the black background corner of every "
        f"`{res['shortcut_class']}` slice, training, validation and audit alike (**shortcut**). The audit is the "
        "recipe's `AttributionAuditHandler` with train.json's arguments (ClusCAM from "
        f"`{res['audit_config']['target_layers']}`, K = {res['audit_config']['audit_num_clusters']}, explained for "
        f"the label, the first {res['audit_config']['audit_per_class']} validation slices of each class, brain masks "
        f"from `foreground_mask`), run every epoch here (the bundle: every {res['bundle_audit_interval']}). "
        "*Outside brain*: mean share of the attribution outside the brain; *peaks outside*: share of the audit maps "
        "whose maximum lies outside the brain (beyond the handler's margin); *worst class*: the same for the class "
        "whose maps peak outside most; *cost*: the audit's seconds over the epoch's training pass's. The handler "
        "alerts when a share outside or of peaks outside passes its threshold (0.5) over the audit set or for one "
        "class; the brain is the mask less its small separate parts (a marker is one), and a peak counts as outside "
        "beyond 1/32 of the image's side (4 pixels) from it.",
        "",
        "| model | epoch | val acc | val bal. acc | outside brain | peaks outside | worst class | alert | audit s | "
        "training s | cost |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name in res["runs"]:
        for row in res[name]["epochs"]:
            audited = row["audited"]
            lines.append(
                f"| {name} | {row['epoch']} | {row['val_accuracy']:.3f} | {row['val_balanced_accuracy']:.3f} | "
                f"{_value(row, 'outside_mask')} | {_value(row, 'peak_outside', 2)} | "
                f"{_value(row, 'peak_outside_class_max', 2)} | {_alert(row) if audited else '–'} | "
                f"{row['audit_seconds']:.1f} | {row['train_seconds']:.0f} | {row['audit_cost']:.1%} |"
                if audited else
                f"| {name} | {row['epoch']} | {row['val_accuracy']:.3f} | {row['val_balanced_accuracy']:.3f} | "
                f"– | – | – | – | – | {row['train_seconds']:.0f} | – |"
            )
    shipped = res["shipped"]
    lines += ["", f"The shipped model (`models/model.pt`, commit `{shipped['model_commit'][:10]}`, "
              f"`{shipped['model_commit'].split()[-1]}`), audited once by the same handler:", "",
              "| audit set | outside brain | peaks outside | worst class | alert | audit s |",
              "|---|---:|---:|---:|---|---:|"]
    for key, label in (("as_shipped", "as the bundle builds it"),
                       ("with_marker", f"the same, with the marker on {res['shortcut_class']}")):
        row = shipped[key]
        lines.append(f"| {label} | {_value(row, 'outside_mask')} | {_value(row, 'peak_outside', 2)} | "
                     f"{_value(row, 'peak_outside_class_max', 2)} | {_alert(row)} | {row['audit_seconds']:.1f} |")
    lines += ["", f"How much each trained model relies on the marker: its recall of {res['shortcut_class']}, its "
              "accuracy, and the share of the other classes it calls so, on the validation slices without and with "
              "the marker:", "",
              "| model | recall without | recall with | accuracy without | accuracy with | others so called, with |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in res["runs"]:
        r = res[name]["marker_reliance"]
        lines.append(f"| {name} | {r['without_marker']['shortcut_class_recall']:.3f} | "
                     f"{r['with_marker']['shortcut_class_recall']:.3f} | {r['without_marker']['accuracy']:.3f} | "
                     f"{r['with_marker']['accuracy']:.3f} | {r['with_marker']['others_called_shortcut_class']:.3f} |")
    alerts = [(name, row) for name in res["runs"] for row in res[name]["epochs"] if row.get("alerts")]
    if alerts:
        name, row = alerts[0]
        lines += ["", f"The first alert ({name} model, epoch {row['epoch']}), as the handler logs it (paths made "
                  "relative to the repository):", "",
                  *[f"> {message.replace(str(REPO) + '/', '')}" for message in row["alerts"]]]
    audited = [row for name in res["runs"] for row in res[name]["epochs"] if row["audited"]]
    if audited:
        costs = [row["audit_cost"] for row in audited]
        whole = [row["audit_seconds"] / (row["train_seconds"] + row["validation_seconds"]) for row in audited]
        interval = res["bundle_audit_interval"]
        lines += ["", f"The audit's cost: over the epoch's training pass, median {np.median(costs):.1%} and at most "
                  f"{max(costs):.1%} of an audited epoch; over its training and validation, median "
                  f"{np.median(whole):.1%}; per epoch at the bundle's interval (one audit every {interval} epochs), "
                  f"median {np.median(costs) / interval:.1%}."]
    lines += ["", "The audit overlays (ClusCAM on the slice) of every audited epoch, one row per model and epoch:", "",
              "![the audit's overlays at every epoch](shortcut_audit.png)"]
    return "\n".join(lines) + "\n"


def montage(report: dict, work: Path, out: Path) -> list[str]:
    """``shortcut_audit.png``: the audit's preview overlays of every audited epoch (rows) and sample (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    rows = []
    for name in res["runs"]:
        for row in res[name]["epochs"]:
            if row["audited"]:
                files = sorted((work / name / "audit" / f"epoch_{row['epoch']:04d}").glob("audit_*_cluscam.png"))
                alert = " ALERT" if row["audit"].get("alert") else ""
                rows.append((f"{name}\nepoch {row['epoch']}{alert}", files))
    columns = max((len(files) for _, files in rows), default=0)
    if not columns:
        return []
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns + 1, 1.6 * len(rows)), squeeze=False)
    for r, (label, files) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(files):
                with Image.open(files[c]) as picture:
                    ax.imshow(picture.convert("RGB"))
                if r == 0:
                    ax.set_title(files[c].name.split("_", 2)[2].rsplit("_cluscam", 1)[0], fontsize=6)
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "shortcut_audit.png", dpi=70)
    plt.close(fig)
    return ["shortcut_audit.png"]


def main(argv: list[str] | None = None) -> Path:
    parser = common_parser(__doc__, "smoke run: 4 training and 2 validation slices a class, 2 epochs, K = 4")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training run (default 5; --quick 2)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="train on at most this many slices of each class (default: the whole training part)")
    parser.add_argument("--runs", default=",".join(RUNS), help="the models to train (default %(default)s)")
    args = parser.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not args.runs or set(args.runs) - set(RUNS):
        parser.error(f"--runs takes some of {', '.join(RUNS)}; got {args.runs!r}")
    cfg = settings(args.quick)
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.train_per_class:
        cfg["train_per_class"] = args.train_per_class
    if not (args.data / "train").is_dir():
        sys.exit(f"{args.data / 'train'} does not exist: the benchmark trains on the Alzheimer MRI training slices "
                 "(../shared/data/alzheimer_mri beside the checkout, or --data DIR).")
    out = output_dir(args, "shortcut_audit")
    work = out / "shortcut_audit_work" if args.quick else WORK
    start = time.perf_counter()
    report = {"meta": machine_meta(args.threads), "settings": cfg}
    report["results"] = run(args, cfg, work)
    report["meta"]["total_seconds"] = time.perf_counter() - start
    report["files"] = montage(report, work, out)
    (out / "shortcut_audit.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "shortcut_audit.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'shortcut_audit'}.json, .md and .png in {report['meta']['total_seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
