"""Sanity checks (Adebayo et al., NeurIPS 2018) of every method on the 2D bundle's model: do the maps depend on it?

- Cascading model-parameter randomisation: the Alzheimer MRI bundle's classifier (loaded at run time from
  ``models/model.pt``), its layers re-initialised from the output down (``fc``, ``layer4``, ..., ``conv1``:
  ``monai_cluscam.metrics.cascade_layers``), the same held-out test slices explained after each step from the
  bundle's target layer for the trained model's predicted class, each map compared with the trained model's by
  Spearman rank correlation and SSIM (``monai_cluscam.metrics.cascading_randomization``).
- Data randomisation: the same architecture (the bundle's ``network_def``) trained from scratch on a subset of
  the training slices with shuffled labels, its maps compared with the bundle model's
  (``monai_cluscam.metrics.compare_models``). Its weights (15 MB) go to the git-ignored
  ``benchmarks/out/sanity/``; a run reuses them when present and trains them when not (``--retrain``: always).
- Two explainers that ignore the model, the input's intensity and its edges (gradient magnitude), as controls:
  the check must fail them.
- ``--controlled-3d``: the same checks in 3D, on the controlled-truth model of ``benchmarks/controlled_3d.py``
  (its masking model, ``controlled_3d_model.pt`` in ``benchmarks/results``, trained there when absent), explained
  from ``layer2`` on its test volumes with a lesion, for class 1; the shuffled-label model is the same network
  trained from scratch on a subset of its training volumes with shuffled labels. Writes ``sanity_3d.*``.
- ``--bundle-3d``: the same on the 3D bundle's classifier (its target layer; ``cluscam_blur`` with the bundle's
  K), its test phantoms of the atrophy classes, and its architecture trained from scratch on phantoms of its
  training seed with shuffled labels. Writes ``sanity_bundle_3d.*``.

A method passes a check when the mean rank correlation with the trained model's maps at the last step is below
the threshold (``monai_cluscam.metrics.DEFAULT_THRESHOLD``, 0.5).

    python benchmarks/sanity.py              # 16 test slices (Score-CAM, occlusion: 2), 7 randomisation steps
    python benchmarks/sanity.py --quick      # smoke run: 2 slices, 2 steps, a few training steps
    python benchmarks/sanity.py --methods gradcam,cluscam --n-images 4
    python benchmarks/sanity.py --controlled-3d  # 16 volumes of 32^3 (Score-CAM, occlusion: 2)
    python benchmarks/sanity.py --bundle-3d --n-images 12 --methods cluscam,cluscam_blur,gradcam,gradcampp,scorecam

Writes ``sanity.json``, ``sanity.md`` and ``sanity_cascade.png`` (the cascade of every method for one slice) into
``--output`` (default ``benchmarks/results``; a temporary folder with ``--quick``).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_2D,
    REPO,
    _model_commit,
    _plain,
    common_parser,
    load_test_slices,
    machine_meta,
    make_cam,
    output_dir,
)

from monai_cluscam.cam.registry import method_label, method_spec  # noqa: E402
from monai_cluscam.metrics import cascading_randomization, compare_models, plot_sanity_checks  # noqa: E402
from monai_cluscam.metrics.sanity import DEFAULT_THRESHOLD  # noqa: E402

#: the methods measured by default, in table order (RISE, at 1000 masks, is left to ``--methods``)
METHODS = ["cluscam", "gradcam", "gradcampp", "scorecam", "decomcam", "occlusion"]
#: methods of hundreds of masked passes per map, checked on the first ``slow_images`` slices only
SLOW = ("scorecam", "occlusion", "rise")
#: ClusCAM with the blurred input as its masked copies' baseline (``ClusCAM(baseline="blur")``), by ``--methods``
CLUSCAM_BLUR = "cluscam_blur"


def explainer_factory(name: str, layer: str, cfg: dict, num_clusters: int | None = None) -> tuple:
    """``(factory(model) -> explainer, label)`` of a registered method at its defaults, or of ClusCAM with the
    blurred baseline (:data:`CLUSCAM_BLUR`; with ``num_clusters`` when given, else the default K)."""
    from monai_cluscam.transforms import make_explainer

    if name == CLUSCAM_BLUR:
        k = {} if num_clusters is None else {"num_clusters": num_clusters}
        return (lambda model: make_explainer(model, "cluscam", layer, baseline="blur", batch_size=cfg["chunk"], **k),
                "ClusCAM, blurred baseline" + (f", K = {num_clusters}" if k else ""))
    return partial(make_cam, name, layer=layer, cfg=cfg), method_label(name)
SHUFFLED_DIR = REPO / "benchmarks" / "out" / "sanity"  # git-ignored: the shuffled-label weights are 15 MB
BUNDLE_3D_TRAIN_SEED = 1  # the phantom bundle's configs/train.json train_seed


def intensity(model: torch.nn.Module):
    """Control explainer: the input's intensity, whatever the model."""
    return lambda x, class_idx=None: x[:, :1].clamp(min=0)


def edges(model: torch.nn.Module):
    """Control explainer: the input's gradient magnitude (an edge detector), whatever the model."""
    return lambda x, class_idx=None: torch.stack(torch.gradient(x[:, 0], dim=tuple(range(1, x.ndim - 1)))).norm(
        dim=0)[:, None]


CONTROLS = {"intensity": (intensity, "input intensity (control)"), "edges": (edges, "edge detector (control)")}


def settings(quick: bool) -> dict:
    if quick:
        return {"n_images": 2, "slow_images": 1, "num_steps": 2, "chunk": 64, "occlusion_box": 32, "rise_masks": 16,
                "train_slices": 8, "train_volumes": 8, "train_epochs": 1, "train_batch": 4, "train_lr": 1e-3, "seed": 0}
    return {"n_images": 16, "slow_images": 2, "num_steps": None, "chunk": 128, "occlusion_box": 16,
            "rise_masks": 1000, "train_slices": 128, "train_volumes": 128,
            "train_epochs": 20, "train_batch": 32, "train_lr": 1e-3, "seed": 0}


# --- the shuffled-label models ----------------------------------------------------------------------------
def fresh_network(bundle_dir: Path) -> torch.nn.Module:
    """A bundle's architecture (its ``network_def``), freshly initialised (seed it first)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    return parser.get_parsed_content("network_def")


def shuffled_label_model(args, cfg: dict, data, network, weights: Path) -> tuple[torch.nn.Module, dict]:
    """``network()`` trained from scratch on the images ``x`` of ``data() -> (x, true labels)`` with a seeded
    permutation of their labels (class frequencies kept; no augmentation, so it can memorise), saved to
    ``weights`` with its record (recipe and training log) beside it as ``.json``; reused from there unless
    missing or ``--retrain``. Returns the model in eval mode and its record."""
    if args.retrain or not weights.exists():
        x, true = data()
        labels = true[torch.randperm(len(true), generator=torch.Generator().manual_seed(cfg["seed"]))]
        torch.manual_seed(cfg["seed"])
        net = network().train()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg["train_lr"], weight_decay=0.0)
        g = torch.Generator().manual_seed(cfg["seed"] + 1)
        log, start = [], time.perf_counter()
        for epoch in range(cfg["train_epochs"]):
            order, correct, total_loss = torch.randperm(len(x), generator=g), 0, 0.0
            for batch in order.split(cfg["train_batch"]):
                logits = net(x[batch])
                loss = torch.nn.functional.cross_entropy(logits, labels[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int((logits.argmax(1) == labels[batch]).sum())
                total_loss += loss.item() * len(batch)
            log.append({"epoch": epoch + 1, "loss": total_loss / len(x), "train_accuracy": correct / len(x)})
            print(f"shuffled labels: epoch {epoch + 1}/{cfg['train_epochs']} loss {log[-1]['loss']:.3f} accuracy "
                  f"{log[-1]['train_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        net.eval()
        with torch.no_grad():
            predicted = torch.cat([net(b) for b in x.split(16)]).argmax(1)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), weights)
        record = {
            "slices": len(x), "epochs": cfg["train_epochs"], "batch": cfg["train_batch"], "lr": cfg["train_lr"],
            "optimizer": "AdamW, no weight decay, no augmentation", "seed": cfg["seed"],
            "seconds": time.perf_counter() - start,
            "shuffled_label_accuracy_eval_mode": float((predicted == labels).float().mean()),
            "true_label_accuracy_eval_mode": float((predicted == true).float().mean()),
            "labels_kept_by_shuffle": float((labels == true).float().mean()),
            "log": log,
        }
        weights.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    record = json.loads(weights.with_suffix(".json").read_text())
    other = network()
    other.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    record["weights"] = f"{weights.relative_to(REPO) if weights.is_relative_to(REPO) else weights} sha256:" \
                        f"{hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}"
    return other.eval(), record


def shuffled_model(args, cfg: dict, preprocessing) -> tuple[torch.nn.Module, dict]:
    """The 2D bundle's architecture trained on ``cfg["train_slices"]`` seeded training slices with shuffled
    labels (``shuffled_labels.pt`` in ``--shuffled-dir``)."""
    from monai_cluscam.data import alzheimer_items

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        items = alzheimer_items(args.data / "train")
        chosen = random.Random(cfg["seed"]).sample(items, min(cfg["train_slices"], len(items)))
        images = torch.stack([_plain(preprocessing({"image": item["image"]})["image"]) for item in chosen])
        return images, torch.tensor([item["label"] for item in chosen])

    return shuffled_label_model(args, cfg, data, lambda: fresh_network(BUNDLE_2D),
                                args.shuffled_dir / "shuffled_labels.pt")


# --- the 3D models ----------------------------------------------------------------------------------------
def controlled_models(args, cfg: dict) -> tuple[dict, torch.nn.Module, torch.nn.Module, dict]:
    """The controlled-truth task's data (``controlled_3d.focal_set``), its masking model (reused from
    ``benchmarks/results``, or the output folder with ``--quick``; trained when absent) and a model of the same
    network trained on ``cfg["train_volumes"]`` training volumes with shuffled labels, with its record."""
    import controlled_3d as c3

    c3cfg = {**c3.settings(args.quick), "seed": 0}
    data = {part: c3.focal_set(c3cfg["n"][part], c3.SEEDS[part], c3cfg["shape"]) for part in ("train", "validation",
                                                                                             "test")}
    nets, _ = c3.load_models(c3cfg, data, args.output if args.quick else c3.Path(c3.__file__).parent / "results",
                             retrain=False, names=("masking",))
    chosen = torch.randperm(len(data["train"]["label"]), generator=torch.Generator().manual_seed(cfg["seed"]))
    chosen = chosen[: cfg["train_volumes"]]
    other, record = shuffled_label_model(
        args, cfg, lambda: (data["train"]["image"][chosen], data["train"]["label"][chosen]), c3.network,
        args.shuffled_dir / "shuffled_labels_3d.pt")
    return data, nets["masking"], other, record


def bundle_3d_models(args, cfg: dict) -> tuple:
    """The 3D bundle's classifier, its test phantoms of the atrophy classes (``n_images``, the bundle's test
    seed) with their labels and names, and its architecture trained on ``cfg["train_volumes"]`` phantoms of
    the bundle's training seed with shuffled labels, with that model's record."""
    from faithfulness import BUNDLE_3D, PHANTOM_SHAPE, phantom_volumes

    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.data import CLASS_NAMES

    bundle = load_bundle(BUNDLE_3D, device="cpu")
    shape = 16 if args.quick else PHANTOM_SHAPE
    images, _, labels = phantom_volumes(bundle, -(-cfg["n_images"] // 3), [0, 1, 3], shape)
    images, labels = images[: cfg["n_images"]], labels[: cfg["n_images"]]

    def training_phantoms() -> tuple[torch.Tensor, torch.Tensor]:
        n = cfg["train_volumes"]
        x, _, true = phantom_volumes(bundle, -(-n // 4), [0, 1, 2, 3], shape, seed=BUNDLE_3D_TRAIN_SEED)
        return x[:n], true[:n]

    other, record = shuffled_label_model(args, cfg, training_phantoms, lambda: fresh_network(BUNDLE_3D),
                                         args.shuffled_dir / "shuffled_labels_bundle_3d.pt")
    names = [f"test phantom {i} ({CLASS_NAMES[int(c)]})" for i, c in enumerate(labels)]
    return bundle, images, labels, names, other, record


# --- the run --------------------------------------------------------------------------------------------
def run(args, cfg: dict, out: Path) -> dict:
    from monai_cluscam.bundle import load_bundle

    if args.bundle_3d:
        bundle, images, labels, names, other, training = bundle_3d_models(args, cfg)
        net, layer = bundle.network, bundle.target_layers
        subject, commit = str(bundle.root.relative_to(REPO)), _model_commit(bundle.root)
    elif args.controlled_3d:
        data, net, other, training = controlled_models(args, cfg)
        layer, subject, commit = "layer2", "the controlled-truth model (benchmarks/controlled_3d.py)", None
        test = data["test"]
        chosen = torch.nonzero(test["label"] == 1).flatten()[: cfg["n_images"]]
        images, labels = test["image"][chosen], test["label"][chosen]
        names = [f"test volume {int(i)}" for i in chosen]
    else:
        bundle = load_bundle(BUNDLE_2D, device="cpu")
        net, layer = bundle.network, bundle.target_layers
        subject, commit = str(BUNDLE_2D.relative_to(REPO)), _model_commit(BUNDLE_2D)
        images, labels, names = load_test_slices(args.data, args.split, "test", cfg["n_images"], bundle.preprocessing)
        other, training = shuffled_model(args, cfg, bundle.preprocessing)
    with torch.no_grad():
        predicted = net(images).argmax(1)
    with torch.no_grad():
        other_accuracy = float((other(images).argmax(1) == labels).float().mean())
    own_k = bundle.num_clusters if args.bundle_3d else None  # the 3D bundle's own ClusCAM setting
    explainers = {name: explainer_factory(name, layer, cfg, own_k) for name in cfg["methods"]}
    explainers.update(CONTROLS)
    rows, cascades = {}, []
    for name, (factory, label) in explainers.items():
        n = cfg["slow_images"] if name in SLOW else len(images)
        x, classes = images[:n], predicted[:n]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cascade = cascading_randomization(net, x, factory, num_steps=cfg["num_steps"], class_idx=classes,
                                              seed=cfg["seed"])
            cascade_seconds = time.perf_counter() - start
            shuffled = compare_models(net, other, x, factory, class_idx=classes, name="shuffled-label model",
                                      keep_maps=False)
        cascade.method = shuffled.method = label
        rows[name] = {
            "label": label,
            "images": n,
            "cascading": {**cascade.summary(), "per_image_spearman": cascade.spearman.tolist(),
                          "per_image_ssim": cascade.ssim.tolist()},
            "shuffled_labels": {**shuffled.summary(), "per_image_spearman": shuffled.spearman[0].tolist(),
                                "per_image_ssim": shuffled.ssim[0].tolist()},
            "seconds": time.perf_counter() - start,
            "cascade_seconds": cascade_seconds,
        }
        cascades.append(cascade)
        print(f"{label}: cascade final rho {cascade.summary()['final_spearman']:.3f}, shuffled-label rho "
              f"{shuffled.summary()['final_spearman']:.3f} ({rows[name]['seconds']:.0f} s)", flush=True)
    png = out / f"{args.name}_cascade.png"
    plot_sanity_checks(cascades, sample=args.figure_slice, images=images, path=png,
                       title=f"Cascading randomisation of {subject.split(' (')[0]} (top layer first), "
                             f"{names[args.figure_slice]}, rho: Spearman rank correlation with the trained model's map")
    # a 256-colour palette: a quarter of the size, no visible change
    Image.open(png).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return {
        "unit": "volumes" if images.ndim == 5 else "slices",
        "bundle": subject,
        "model_commit": commit,
        "target_layer": layer,
        "images": len(images),
        "image_names": names,
        "accuracy_on_these_slices": float((predicted == labels).float().mean()),
        "shuffled_label_model": {**training, "accuracy_on_these_slices": other_accuracy},
        "steps": cascades[0].steps,
        "methods": rows,
    }


def markdown(report: dict) -> str:
    meta, res, cfg = report["meta"], report["results"], report["settings"]
    train = res["shuffled_label_model"]
    steps = res["steps"]
    unit = res.get("unit", "slices")
    model = res["bundle"] if res["model_commit"] is None else (
        f"`{res['bundle']}` (weights: commit `{res['model_commit'][:10]}`, `{res['model_commit'].split()[-1]}`)")
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['total_seconds']:.0f} s in all.",
        "",
        f"**Sanity checks** (Adebayo et al., NeurIPS 2018) on {model}, {res['images']} held-out test {unit} "
        f"(accuracy {res['accuracy_on_these_slices']:.3f}), each explained for the trained model's predicted class "
        f"from `{res['target_layer']}`, every method at its package defaults"
        + (f" (occlusion boxes of {cfg['occlusion_box']} pixels)" if "occlusion" in cfg["methods"] else "")
        + f"; {', '.join(method_label(m) for m in cfg['methods'] if m in SLOW) or 'none'} on the first "
        f"{cfg['slow_images']} {unit} only (hundreds of masked passes per map). Cell: mean Spearman rank "
        f"correlation (SSIM) between the trained model's map and the map after the step, over the {unit}; a "
        f"method passes when the last value is below {DEFAULT_THRESHOLD}.",
        "",
        "Cascading randomisation, layers re-initialised cumulatively from the output down:",
        "",
        "| method | " + " | ".join(f"+`{s}`" for s in steps) + " | passes |",
        "|---|" + "---:|" * len(steps) + ":---:|",
    ]
    for row in res["methods"].values():
        cells = [f"{s['spearman_mean']:.2f} ({s['ssim_mean']:.2f})" for s in row["cascading"]["steps"]]
        verdict = "yes" if row["cascading"]["passed"] else "no"
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {verdict} |")
    lines += [
        "",
        f"Shuffled labels: the same architecture trained from scratch on {train['slices']} training {unit} with "
        f"shuffled labels ({train['epochs']} epochs, {train['optimizer']}, {train['seconds']:.0f} s; eval-mode "
        f"accuracy {train['shuffled_label_accuracy_eval_mode']:.2f} on its shuffled labels, "
        f"{train['true_label_accuracy_eval_mode']:.2f} on their true labels, {train['accuracy_on_these_slices']:.2f} "
        f"on these test {unit}; weights `{train['weights']}`, not committed):",
        "",
        "| method | Spearman | SSIM | passes | seconds (both checks) |",
        "|---|---:|---:|:---:|---:|",
    ]
    for row in res["methods"].values():
        s = row["shuffled_labels"]
        lines.append(f"| {row['label']} | {s['final_spearman']:.2f} | {s['final_ssim']:.2f} | "
                     f"{'yes' if s['passed'] else 'no'} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = common_parser(__doc__, "smoke run: 2 slices, 2 steps, a few training steps")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated registered methods, or {CLUSCAM_BLUR} (ClusCAM with "
                        f"baseline='blur') (default: {','.join(METHODS)})")
    parser.add_argument("--n-images", type=int, default=None, help="use the first N test slices")
    parser.add_argument("--figure-slice", type=int, default=0, help="the slice of the figure")
    parser.add_argument("--shuffled-dir", type=Path, default=None,
                        help=f"where the shuffled-label weights are read or written (default {SHUFFLED_DIR}; the "
                             "output folder with --quick)")
    parser.add_argument("--retrain", action="store_true", help="train the shuffled-label model even if saved")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--controlled-3d", action="store_true",
                       help="the 3D checks, on the controlled-truth model of benchmarks/controlled_3d.py")
    which.add_argument("--bundle-3d", action="store_true",
                       help="the 3D checks, on the 3D bundle's classifier and its test phantoms")
    args = parser.parse_args(argv)
    args.name = "sanity_3d" if args.controlled_3d else "sanity_bundle_3d" if args.bundle_3d else "sanity"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        methods = [m if m == CLUSCAM_BLUR else method_spec(m).name for m in methods]
    except ValueError as err:
        parser.error(str(err))
    if not methods:
        parser.error("--methods is empty")
    cfg = settings(args.quick)
    cfg["methods"] = methods
    if args.n_images:
        cfg["n_images"] = args.n_images
    if not 0 <= args.figure_slice < cfg["n_images"]:
        parser.error(f"--figure-slice must be below the number of slices, {cfg['n_images']}")
    out = output_dir(args, args.name)
    args.output = out
    args.shuffled_dir = args.shuffled_dir or (out if args.quick else SHUFFLED_DIR)
    start = time.perf_counter()
    report = {"meta": machine_meta(args.threads), "settings": cfg}
    report["results"] = run(args, cfg, out)
    report["meta"]["total_seconds"] = time.perf_counter() - start
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / args.name}.json, .md and _cascade.png in {report['meta']['total_seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
