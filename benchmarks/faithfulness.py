"""Faithfulness and localisation of ClusCAM against Grad-CAM, Grad-CAM++, Score-CAM, DecomCAM, occlusion and RISE.

Faithfulness (2D): the Alzheimer MRI bundle's classifier (loaded at run time from ``models/model.pt``) on the
held-out test slices (``slices/`` with ``labels.csv`` in ``../shared/data/alzheimer_mri``; the model never trained
on them), ClusCAM's data-driven K chosen on validation slices of the training split (``configs/split.json``).
Each slice is explained for the model's predicted class, every method from
the same target layer (the bundle's) with its package defaults; per method: Average Drop, Increase in
Confidence, Average Gain, Deletion AUC (zeros baseline), Insertion AUC (blurred baseline) and seconds per
image. The methods run round-robin on each batch, so load from other work on a shared machine falls on all of
them alike. A seeded random map is scored too, as the chance level of every metric.

Localisation (3D): the phantom volume bundle's classifier on seeded phantom volumes of its test seed
(``monai_cluscam.data.make_phantom``, 64^3 at 3 mm, the grid the bundle's preprocessing produces), the atrophic
classes only (a Non_Demented phantom has no atrophy region), each explained for its true class; per method:
pointing game and energy-based pointing game against the atrophy mask.

    python benchmarks/faithfulness.py            # full run: 960 test slices, 9 phantom volumes
    python benchmarks/faithfulness.py --quick    # smoke run: 4 slices, 2 small volumes, few masks and steps
    python benchmarks/faithfulness.py --layer layer4 --methods scorecam --no-3d --output DIR
                                                 # another layer, some baselines, the 2D part only

Writes ``faithfulness.json``, ``faithfulness.md``, ``faithfulness_curves.png``, ``faithfulness_gallery.png``
and ``faithfulness_phantoms.png`` into ``--output`` (default ``benchmarks/results``; a temporary folder
with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from monai_cluscam.cam.registry import method_label, method_names, method_spec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DATA = REPO.parent / "shared" / "data" / "alzheimer_mri"
BUNDLE_2D = REPO / "bundles" / "alzheimer_mri_cluscam"
BUNDLE_3D = REPO / "bundles" / "phantom_volume_cluscam"
PHANTOM_TEST_SEED = 3  # the phantom bundle's configs/evaluate.json test_seed
PHANTOM_SHAPE = 64  # 3 mm over the 192 mm field of view: the grid the bundle's preprocessing makes
METRICS = [
    ("average_drop", "Average Drop", "lower"),
    ("increase_in_confidence", "Increase in Confidence", "higher"),
    ("average_gain", "Average Gain", "higher"),
    ("deletion_auc", "Deletion AUC", "lower"),
    ("insertion_auc", "Insertion AUC", "higher"),
]
#: The committed tables' order of the registry's methods; a method registered later (see
#: ``monai_cluscam.cam.registry``) is measured too, after these.
_TABLE_ORDER = ["cluscam", "gradcam", "gradcampp", "scorecam", "decomcam", "occlusion", "rise"]
METHODS = sorted(method_names(), key=lambda m: _TABLE_ORDER.index(m) if m in _TABLE_ORDER else len(_TABLE_ORDER))
#: 2D only: ClusCAM with K chosen by its published data-driven rule (``select_num_clusters``) on validation slices
AUTO = "cluscam-auto"
BASELINES = METHODS[1:]
#: Display names: the registry's labels, and this study's own rows
LABELS = {
    **{m: method_label(m) for m in METHODS}, AUTO: "ClusCAM, data-driven K", "random": "random map (chance)",
}


def settings(quick: bool) -> dict:
    """Every knob of a run, recorded in the JSON. The full run uses each method's package defaults."""
    if quick:
        return {"n_images": 2, "n_validation": 1, "k_candidates": [2, 5], "batch_images": 2, "steps": 4,
                "rise_masks": 16, "occlusion_box": 32, "chunk": 64, "phantoms_per_class": 1, "phantom_classes": [0],
                "phantom_shape": 16, "warm_up": False}
    return {"n_images": None, "n_validation": 48, "k_candidates": [5, 10, 20, 30, 40, 50, 64, 100], "batch_images": 16,
            "steps": 50, "rise_masks": 1000, "occlusion_box": 16, "chunk": 128, "phantoms_per_class": 3,
            "phantom_classes": [0, 1, 3], "phantom_shape": PHANTOM_SHAPE, "warm_up": True}


def make_cam(name: str, network: torch.nn.Module, layer: str, cfg: dict):
    """The method ``name`` from the package registry, on ``layer``, with its defaults (RISE: ``rise_masks``)."""
    from monai_cluscam.transforms import make_explainer

    args: dict = {}
    if name == AUTO:
        name, args["num_clusters"] = "cluscam", cfg["auto_k"]
    if method_spec(name).masked_passes:
        args["batch_size"] = cfg["chunk"]
    if name == "rise":
        args["num_masks"] = cfg["rise_masks"]
    if name == "occlusion":
        args["mask_size"] = cfg["occlusion_box"]
    return make_explainer(network, name, layer, **args)


def random_maps(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Chance level: smooth seeded noise maps in [0, 1] (smooth like a CAM, so deletion removes blobs)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(x.shape[0], 1, *[8] * (x.ndim - 2), generator=g)
    from monai_cluscam.cam.base import minmax_normalize, upsample

    return minmax_normalize(upsample(coarse, x.shape[2:]))[0].to(x)


# --- data -----------------------------------------------------------------------------------------------
def load_test_slices(data_dir: Path, split_file: Path, part: str, limit: int | None, preprocessing) -> tuple:
    """Preprocessed slices ``(images (N,1,H,W), labels, names)``: ``part="test"`` reads the held-out slices of
    ``data_dir`` (``labels.csv`` with ``slices/``, or any layout ``alzheimer_items`` reads), ``"validation"`` the
    validation slices that ``split_file`` lists, relative to ``data_dir/train``. Exits with a message when the data
    are absent."""
    from monai_cluscam.data import alzheimer_items

    if not data_dir.is_dir():
        sys.exit(
            f"{data_dir} does not exist: the benchmark needs the Alzheimer MRI slices (../shared/data/alzheimer_mri "
            "beside the checkout, or --data DIR)."
        )
    if part == "test":
        chosen = alzheimer_items(data_dir)
    else:
        train = data_dir / "train"
        by_name = {Path(item["image"]).resolve().relative_to(train.resolve()).as_posix(): item
                   for item in alzheimer_items(train)}
        names = json.loads(split_file.read_text())[part]
        missing = [n for n in names if n not in by_name]
        if missing:
            sys.exit(f"{train} lacks {len(missing)} slices of the {part!r} split of {split_file} "
                     f"(first: {missing[0]}).")
        chosen = [by_name[n] for n in names]
    chosen = chosen[:limit] if limit else chosen
    images = torch.stack([_plain(preprocessing({"image": item["image"]})["image"]) for item in chosen])
    labels = torch.tensor([item["label"] for item in chosen])
    return images, labels, [Path(item["image"]).name for item in chosen]


def phantom_volumes(bundle, per_class: int, classes: list[int], shape: int, seed: int = PHANTOM_TEST_SEED,
                    field: str = "mask") -> tuple:
    """Seeded test phantoms of the 3D bundle (its test seed), preprocessed as the bundle does after loading:
    ``(images (N,1,*s), masks (N,1,*s), labels)``; the masks are the phantoms' ``field``, by default the atrophy
    (``"region_mask"``: the anatomy atrophy is simulated in). At ``PHANTOM_SHAPE`` the bundle's reorientation,
    resampling and padding leave the grid as it is; other shapes (the smoke run's) skip them."""
    from monai.transforms import Orientationd, ResizeWithPadOrCropd, Spacingd

    from monai_cluscam.data import make_phantom

    steps = bundle.preprocessing.transforms[1:]  # the bundle's steps after reading the file
    if shape != PHANTOM_SHAPE:
        steps = [t for t in steps if not isinstance(t, (Orientationd, Spacingd, ResizeWithPadOrCropd))]
    post_load = Compose(steps)
    seeds = np.random.SeedSequence([seed, 0]).generate_state(per_class * 4).tolist()
    images, masks, labels = [], [], []
    for i, seed in enumerate(seeds):
        label = i % 4
        if label not in classes:
            continue
        phantom = make_phantom(label, int(seed), kind="volume", shape=shape, fov_mm=192.0)
        image = _plain(post_load({"image": phantom.as_metatensor("image")})["image"])
        if tuple(image.shape) != tuple(phantom.mask.shape):
            raise RuntimeError(f"preprocessing changed the phantom grid {phantom.mask.shape} -> {tuple(image.shape)}")
        images.append(image)
        masks.append(torch.as_tensor(getattr(phantom, field) > 0))
        labels.append(label)
    return torch.stack(images), torch.stack(masks), torch.tensor(labels)


def _plain(image) -> torch.Tensor:
    """A float32 torch tensor without MONAI metadata."""
    return torch.as_tensor(np.asarray(image), dtype=torch.float32)


# --- runs -----------------------------------------------------------------------------------------------
def warm_up(cams: dict, x: torch.Tensor, cfg: dict) -> None:
    """One untimed call of every method, so that first-call costs (thread pools, lazy set-up) are not timed."""
    if not cfg["warm_up"]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cam in cams.values():
            cam(x[:1])


def explain_round_robin(cams: dict, x: torch.Tensor, classes: torch.Tensor, offset: int) -> tuple[dict, dict]:
    """Maps and wall seconds of every method on one batch, in an order rotated by ``offset``."""
    names = list(cams)
    order = names[offset % len(names) :] + names[: offset % len(names)]
    maps, seconds = {}, {}
    for name in order:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flat-map warnings are counted below, not printed per batch
            maps[name] = _plain(cams[name](x, class_idx=classes))
        seconds[name] = time.perf_counter() - start
    return maps, seconds


def faithfulness_scores(net, x: torch.Tensor, sal: torch.Tensor, classes: torch.Tensor, cfg: dict) -> tuple:
    """The five metrics of each sample (``{key: list}``) and its deletion and insertion curves ``(B, steps + 1)``:
    deletion to zeros, insertion from a blurred input, ``cfg["steps"]`` steps."""
    from monai_cluscam.metrics import confidence_scores, deletion_curve, insertion_curve

    scores = confidence_scores(net, x, sal, classes, batch_size=cfg["chunk"])
    deletion = deletion_curve(net, x, sal, classes, steps=cfg["steps"], baseline="zeros", batch_size=cfg["chunk"])
    insertion = insertion_curve(net, x, sal, classes, steps=cfg["steps"], baseline="blur", batch_size=cfg["chunk"])
    values = {
        "average_drop": scores.average_drop.tolist(),
        "increase_in_confidence": scores.increase_in_confidence.tolist(),
        "average_gain": scores.average_gain.tolist(),
        "deletion_auc": deletion.auc.tolist(),
        "insertion_auc": insertion.auc.tolist(),
    }
    return values, deletion.curve, insertion.curve


def faithfulness_2d(args, cfg: dict) -> dict:
    from monai_cluscam.bundle import load_bundle

    bundle = load_bundle(BUNDLE_2D, device="cpu")
    net, layer = bundle.network, cfg["layer"] or bundle.target_layers
    images, labels, names = load_test_slices(args.data, args.split, "test", cfg["n_images"], bundle.preprocessing)
    with torch.no_grad():
        predicted = torch.cat([net(b) for b in images.split(64)]).argmax(1)
    selection = choose_k(args, cfg, bundle, layer)
    methods = [METHODS[0], AUTO, *cfg["baselines"]]
    cams = {name: make_cam(name, net, layer, cfg) for name in methods}
    warm_up(cams, images, cfg)
    per = {name: {key: [] for key, _, _ in METRICS} for name in [*methods, "random"]}
    curves = {name: {"deletion": [], "insertion": []} for name in per}
    seconds = dict.fromkeys(methods, 0.0)
    flat = dict.fromkeys(per, 0)
    mean_map = {name: [] for name in per}
    gallery = {}
    bs = cfg["batch_images"]
    for b, start in enumerate(range(0, len(images), bs)):
        x, c = images[start : start + bs], predicted[start : start + bs]
        maps, secs = explain_round_robin(cams, x, c, b)
        maps["random"] = random_maps(x, seed=start)
        for name, sal in maps.items():
            seconds[name] = seconds.get(name, 0.0) + secs.get(name, 0.0)
            flat[name] += int((sal.flatten(1).amax(1) == 0).sum())
            mean_map[name] += sal.flatten(1).mean(1).tolist()
            values, deletion, insertion = faithfulness_scores(net, x, sal, c, cfg)
            for key, v in values.items():
                per[name][key] += v
            curves[name]["deletion"].append(deletion)
            curves[name]["insertion"].append(insertion)
            if start < args.gallery:
                gallery.setdefault(name, []).append(sal[: args.gallery - start])
        done = min(start + bs, len(images))
        print(f"2D: {done}/{len(images)} slices, " + ", ".join(f"{k} {v / done:.2f}s" for k, v in seconds.items()
                                                                  if k in methods), flush=True)
    n = len(images)
    results = {}
    for name in per:
        row = summarise(per[name])
        row["seconds_per_image"] = seconds[name] / n if name in methods else None
        row["flat_maps"] = flat[name]
        row["mean_map_value"] = float(np.mean(mean_map[name]))
        row["deletion_curve"] = torch.cat(curves[name]["deletion"]).mean(0).tolist()
        row["insertion_curve"] = torch.cat(curves[name]["insertion"]).mean(0).tolist()
        row["per_image"] = per[name]
        results[name] = row
    return {
        "bundle": str(BUNDLE_2D.relative_to(REPO)),
        "model_commit": _model_commit(BUNDLE_2D),
        "target_layer": layer,
        "images": n,
        "image_names": names,
        "accuracy_on_these_slices": float((predicted == labels).float().mean()),
        "k_selection": selection,
        "methods": results,
        "wins": {ours: wins(results, ours, cfg["baselines"]) for ours in (METHODS[0], AUTO)},
        "_gallery": {"image": images[: args.gallery], **{k: torch.cat(v) for k, v in gallery.items()}},
        "_class_names": [bundle.class_names[i] for i in predicted[: args.gallery].tolist()],
    }


def choose_k(args, cfg: dict, bundle, layer: str) -> dict:
    """ClusCAM's data-driven K (``select_num_clusters``) on the first validation slices of the split (never the
    test slices); sets ``cfg["auto_k"]``."""
    from monai_cluscam.cam import select_num_clusters

    validation, _, _ = load_test_slices(args.data, args.split, "validation", cfg["n_validation"], bundle.preprocessing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select_num_clusters(bundle.network, layer, validation.split(cfg["batch_images"]),
                                  candidates=cfg["k_candidates"], progress=False, batch_size=cfg["chunk"])
    cfg["auto_k"] = sel.num_clusters
    return {"validation_images": len(validation), "candidates": sel.candidates,
            "mean_score_diffs": sel.mean_score_diffs, "chosen": sel.num_clusters}


def localisation_3d(cfg: dict) -> dict:
    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.metrics import energy_pointing_game, pointing_game

    bundle = load_bundle(BUNDLE_3D, device="cpu")
    net, layer = bundle.network, cfg["layer_3d"] or bundle.target_layers
    images, masks, labels = phantom_volumes(bundle, cfg["phantoms_per_class"], cfg["phantom_classes"],
                                            cfg["phantom_shape"])
    with torch.no_grad():
        predicted = net(images).argmax(1)
    methods = [METHODS[0], *cfg["baselines"]]
    cams = {name: make_cam(name, net, layer, cfg) for name in methods}
    warm_up(cams, images, cfg)
    hits = {name: [] for name in [*methods, "random"]}
    energy = {name: [] for name in hits}
    seconds = dict.fromkeys(methods, 0.0)
    example = {}
    for i in range(len(images)):
        x, m = images[i : i + 1], masks[i : i + 1]
        maps, secs = explain_round_robin(cams, x, labels[i : i + 1], i)
        maps["random"] = random_maps(x, seed=1000 + i)
        for name, sal in maps.items():
            seconds[name] = seconds.get(name, 0.0) + secs.get(name, 0.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hits[name].append(bool(pointing_game(sal, m)[0]))
                energy[name].append(float(energy_pointing_game(sal, m)[0]))
            if i == 0:
                example[name] = sal[0, 0]
        print(f"3D: {i + 1}/{len(images)} volumes", flush=True)
    example["image"], example["mask"] = images[0, 0], masks[0, 0]
    n = len(images)
    rows = {
        name: {
            "pointing_game": float(np.mean(hits[name])),
            "energy_pointing_game": float(np.nanmean(energy[name])),
            "seconds_per_volume": seconds[name] / n if name in methods else None,
            "hits": hits[name],
            "energy": energy[name],
        }
        for name in hits
    }
    return {
        "bundle": str(BUNDLE_3D.relative_to(REPO)),
        "target_layer": layer,
        "volumes": n,
        "shape": cfg["phantom_shape"],
        "labels": labels.tolist(),
        "predicted": predicted.tolist(),
        "mask_fraction": float(masks.float().mean()),
        "methods": rows,
        "_example": example,
    }


def summarise(per_image: dict) -> dict:
    """Mean and standard error of each metric's per-image values."""
    row = {key: float(np.mean(v)) for key, v in per_image.items()}
    row.update({f"{key}_se": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
                for key, v in per_image.items()})
    return row


def wins(results: dict, ours_name: str = "cluscam", baselines: list[str] = BASELINES) -> dict:
    """For each baseline, the metrics on which the ClusCAM variant's mean is strictly better."""
    out = {}
    for name in baselines:
        better = []
        for key, _, direction in METRICS:
            ours, theirs = results[ours_name][key], results[name][key]
            if (ours < theirs) if direction == "lower" else (ours > theirs):
                better.append(key)
        out[name] = better
    return out


# --- output ---------------------------------------------------------------------------------------------
def _model_commit(bundle: Path) -> str:
    """The last commit of the bundle's weights and the SHA-256 of the file read (it may differ from the commit)."""
    weights = bundle / "models" / "model.pt"
    out = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(weights)], capture_output=True, text=True,
                         cwd=REPO)
    return f"{out.stdout.strip() or 'uncommitted'} sha256:{hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}"


def machine_meta(threads: int) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "threads": threads,
    }


def markdown(report: dict) -> str:
    meta, cfg, f2d = report["meta"], report["settings"], report["faithfulness_2d"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads.",
        "",
        f"**Faithfulness**: `{f2d['bundle']}` (weights: commit `{f2d['model_commit'][:10]}`, "
        f"`{f2d['model_commit'].split()[-1]}`; accuracy "
        f"{f2d['accuracy_on_these_slices']:.3f} on these slices), {f2d['images']} held-out test slices, each "
        f"explained for the predicted class from `{f2d['target_layer']}`; deletion (zeros) and insertion "
        f"(blurred input) in {cfg['steps']} steps; "
        + (f"RISE with {cfg['rise_masks']} masks; " if "rise" in cfg["baselines"] else "")
        + "other methods at their package defaults (ClusCAM K = 10, r = 0.5, tau = 0.5"
        + (f"; occlusion overlap 0.5, boxes of {cfg['occlusion_box']} pixels" if "occlusion" in cfg["baselines"]
           else "")
        + "). Mean over slices (standard error in the JSON); seconds per image on this machine.",
        "",
        "| method | Avg Drop ↓ | Incr. Conf. ↑ | Avg Gain ↑ | Deletion AUC ↓ | Insertion AUC ↑ | s / image "
        "| mean map |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in f2d["methods"].items():
        secs = f"{row['seconds_per_image']:.3f}" if row["seconds_per_image"] is not None else "-"
        label = f"{LABELS[name]} ({f2d['k_selection']['chosen']})" if name == AUTO else LABELS[name]
        lines.append(
            f"| {label} | {row['average_drop']:.2f} | {row['increase_in_confidence']:.2f} | "
            f"{row['average_gain']:.2f} | {row['deletion_auc']:.4f} | {row['insertion_auc']:.4f} | {secs} | "
            f"{row['mean_map_value']:.3f} |"
        )
    sel = f2d["k_selection"]
    lines += ["", f"Data-driven K: `select_num_clusters` on {sel['validation_images']} validation slices, candidates "
              f"{sel['candidates']}, chose K = {sel['chosen']}. Mean map: the mean of the map, i.e. how much of the "
              "image the soft mask of Average Drop / Increase in Confidence / Average Gain keeps."]
    for ours, table in f2d["wins"].items():
        lines += ["", f"{LABELS[ours]} better than each baseline on (of 5 metrics):", ""]
        for name, better in table.items():
            lines.append(f"- {LABELS[name]}: {len(better)} ({', '.join(better) or 'none'})")
    if "localisation_3d" not in report:
        return "\n".join(lines) + "\n"
    l3d = report["localisation_3d"]
    lines += [
        "",
        f"**Localisation**{' (measured ' + l3d['measured'] + ')' if 'measured' in l3d else ''}: "
        f"`{l3d['bundle']}` on {l3d['volumes']} phantom volumes ({l3d['shape']}^3, atrophic "
        f"classes, test seed {PHANTOM_TEST_SEED}), each explained for its true class from `{l3d['target_layer']}`; "
        f"the atrophy masks cover {100 * l3d['mask_fraction']:.2f}% of the voxels.",
        "",
        "| method | pointing game ↑ | energy pointing game ↑ | s / volume |",
        "|---|---:|---:|---:|",
    ]
    for name, row in l3d["methods"].items():
        secs = f"{row['seconds_per_volume']:.2f}" if row["seconds_per_volume"] is not None else "-"
        lines.append(f"| {LABELS[name]} | {row['pointing_game']:.3f} | {row['energy_pointing_game']:.4f} | {secs} |")
    return "\n".join(lines) + "\n"


def plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f2d = report["faithfulness_2d"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        for name, row in f2d["methods"].items():
            curve = row[f"{kind}_curve"]
            ax.plot(np.linspace(0, 1, len(curve)), curve, label=f"{LABELS[name]} ({row[f'{kind}_auc']:.3f})",
                    linestyle="--" if name == "random" else "-", linewidth=2.2 if name == "cluscam" else 1.2)
        ax.set(title=f"{kind.capitalize()} (mean over {f2d['images']} slices)", xlabel="fraction of pixels",
               ylabel="probability of the explained class")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "faithfulness_curves.png", dpi=110)
    plt.close(fig)

    gallery = f2d["_gallery"]
    columns = ["image", METHODS[0], AUTO, *report["settings"]["baselines"]]
    rows = gallery["image"].shape[0]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.7 * rows), squeeze=False)
    for r in range(rows):
        for col, name in enumerate(columns):
            ax = axes[r, col]
            ax.imshow(gallery["image"][r, 0].T, cmap="gray")
            if name != "image":
                ax.imshow(gallery[name][r, 0].T, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(LABELS.get(name, name), fontsize=8)
            if col == 0:
                ax.set_ylabel(f2d["_class_names"][r].replace("_", " "), fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "faithfulness_gallery.png", dpi=100)
    plt.close(fig)

    if "_example" not in report.get("localisation_3d", {}):  # not run, or reused with its figure
        return ["faithfulness_curves.png", "faithfulness_gallery.png"]
    example = report["localisation_3d"]["_example"]
    z = int(example["mask"].float().sum((0, 1)).argmax())  # the axial slice with most atrophy
    columns = ["image", *report["localisation_3d"]["methods"]]
    columns.remove("random")
    fig, axes = plt.subplots(1, len(columns), figsize=(1.7 * len(columns), 2.0))
    for ax, name in zip(axes, columns, strict=True):
        ax.imshow(example["image"][:, :, z].T, cmap="gray", origin="lower")
        if name != "image":
            ax.imshow(example[name][:, :, z].T, cmap="jet", alpha=0.45, vmin=0, vmax=1, origin="lower")
        ax.contour(example["mask"][:, :, z].T.float(), levels=[0.5], colors="white", linewidths=0.6, origin="lower")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(LABELS.get(name, name), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "faithfulness_phantoms.png", dpi=100)
    plt.close(fig)
    return ["faithfulness_curves.png", "faithfulness_gallery.png", "faithfulness_phantoms.png"]


def common_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options both benchmark scripts take."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--data", type=Path, default=DATA, help="the Alzheimer MRI slices (default %(default)s)")
    parser.add_argument("--split", type=Path, default=BUNDLE_2D / "configs" / "split.json")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def output_dir(args: argparse.Namespace, name: str) -> Path:
    """``--output``, else ``benchmarks/results`` (a fresh temporary folder for a ``--quick`` run); sets threads."""
    torch.set_num_threads(args.threads)
    out = args.output or (Path(tempfile.mkdtemp(prefix=f"{name}_quick_")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_benchmark(name: str, args: argparse.Namespace, cfg: dict, run, markdown) -> Path:
    """The sibling scripts' shared end: ``run()`` timed, ``<name>.json`` and ``<name>.md`` written (``markdown``
    of the report) into the output folder, the table printed; returns the folder."""
    out = output_dir(args, name)
    start = time.perf_counter()
    report = {"meta": machine_meta(args.threads), "settings": cfg, "results": run()}
    report["meta"]["total_seconds"] = time.perf_counter() - start
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / name}.json and {name}.md in {report['meta']['total_seconds']:.0f} s")
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = common_parser(__doc__, "smoke run: few slices, volumes, masks and steps")
    parser.add_argument("--n-images", type=int, default=None, help="use the first N test slices")
    parser.add_argument("--gallery", type=int, default=4, help="slices shown in the gallery")
    parser.add_argument("--layer", default=None, help="the 2D target layer (default: the bundle's target_layers)")
    parser.add_argument("--methods", default=",".join(BASELINES),
                        help=f"comma-separated baselines (default: all of {', '.join(BASELINES)})")
    parser.add_argument("--layer-3d", default=None, help="the 3D target layer (default: the 3D bundle's)")
    parser.add_argument("--no-3d", action="store_true", help="skip the 3D localisation part")
    parser.add_argument("--reuse-3d", action="store_true",
                        help="keep the 3D localisation part of the existing faithfulness.json (the 3D bundle did "
                             "not change) and its phantom figure; rerun the 2D part only")
    args = parser.parse_args(argv)
    baselines = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not baselines or set(baselines) - set(BASELINES):
        parser.error(f"--methods takes some of {', '.join(BASELINES)}; got {args.methods!r}")
    if args.no_3d and args.reuse_3d:
        parser.error("--no-3d and --reuse-3d exclude each other")
    out = output_dir(args, "faithfulness")
    cfg = settings(args.quick)
    cfg.update(layer=args.layer, layer_3d=args.layer_3d, baselines=[m for m in BASELINES if m in baselines])
    if args.n_images:
        cfg["n_images"] = args.n_images
    args.gallery = min(args.gallery, cfg["n_images"] or args.gallery)

    start = time.perf_counter()
    report = {"meta": machine_meta(args.threads), "settings": cfg}
    report["faithfulness_2d"] = faithfulness_2d(args, cfg)
    print(f"2D part done in {time.perf_counter() - start:.0f} s", flush=True)
    if args.reuse_3d:
        previous = json.loads((out / "faithfulness.json").read_text())
        report["localisation_3d"] = {**previous["localisation_3d"], "measured": previous["meta"]["date"]}
    elif not args.no_3d:
        report["localisation_3d"] = localisation_3d(cfg)
    report["meta"]["total_seconds"] = time.perf_counter() - start
    files = plots(report, out)
    print(f"plots done in {time.perf_counter() - start:.0f} s", flush=True)
    (out / "faithfulness.md").write_text(markdown(report))
    public = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v
              for k, v in report.items()}
    (out / "faithfulness.json").write_text(json.dumps(public, indent=1) + "\n")
    print(markdown(report))
    print(f"wrote {out / 'faithfulness.json'}, faithfulness.md, {', '.join(files)} "
          f"in {report['meta']['total_seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
