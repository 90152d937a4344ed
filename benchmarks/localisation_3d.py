"""Where the 3D bundle's maps fall: ClusCAM's variants next to Score-CAM, Grad-CAM and Grad-CAM++, on phantoms.

The phantom volume bundle's classifier on the test phantoms of ``benchmarks/faithfulness.py`` (its test seed,
atrophic classes, 64^3), each explained for its true class from each of ``layer2`` and ``layer3``. Variants:
ClusCAM as published (K=10, zeros in the masked copies), with the blurred input as baseline at several K, and
the bundle's own setting (its ``inference.json``: layer, K, baseline, foreground); Score-CAM, Grad-CAM and
Grad-CAM++ (package defaults). Every variant as it is and restricted to the subject (``foreground=0.15``: the
phantoms' noise floor outside the brain reaches about 0.1 of the normalised image). Per
variant: the energy pointing game (share of the map's mass) against the simulated atrophy and against the
anatomical region atrophy is simulated in (``Phantom.region_mask``: the lateral ventricles and the medial temporal
lobes, dilated), with the region's ratio to a uniform map; the region pointing game; the map's mass outside the
brain (``Phantom.brain_mask``); the share of maps whose peak lies inside the brain. Also ClusCAM's data-driven K
(``select_num_clusters``) on phantoms of the bundle's validation seed, never the test seed.

    python benchmarks/localisation_3d.py           # 15 test phantoms, 12 validation phantoms (about 10 minutes)
    python benchmarks/localisation_3d.py --quick   # smoke run: 16^3 phantoms, few variants

Writes ``localisation_3d.json``, ``localisation_3d.md`` and ``localisation_3d_montage.png`` (one phantom, each
method's map) into ``--output`` (default ``benchmarks/results``;
a temporary folder with ``--quick``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_3D,
    PHANTOM_SHAPE,
    PHANTOM_TEST_SEED,
    REPO,
    _model_commit,
    common_parser,
    phantom_volumes,
    run_benchmark,
)

PHANTOM_VALIDATION_SEED = 2  # the phantom bundle's configs/train.json val_seed
ATROPHIC = [0, 1, 3]  # Mild, Moderate, Very_Mild: a Non_Demented phantom has no atrophy
#: grey value above which a voxel of a normalised phantom is subject: the phantoms' noise floor outside the brain
#: reaches about 0.1 (``foreground=True``, 0.04, would keep half the background)
PHANTOM_FOREGROUND = 0.15


def settings(quick: bool) -> dict:
    if quick:
        return {"shape": 16, "per_class": 1, "validation_per_class": 1, "k_candidates": [2, 4], "layers": ["layer2"],
                "cluscam": [[4, "zero"], [4, "blur"]]}
    return {"shape": PHANTOM_SHAPE, "per_class": 5, "validation_per_class": 3, "k_candidates": [5, 10, 20, 40],
            "layers": ["layer2", "layer3"], "cluscam": [[10, "zero"], [10, "blur"], [20, "blur"], [40, "blur"]]}


def variants(bundle, cfg: dict) -> dict:
    """``label -> (method, layer, method arguments, foreground)``: every variant from every layer, then the
    bundle's own setting."""
    out = {}
    for layer in cfg["layers"]:
        for fg in (False, PHANTOM_FOREGROUND):
            where = ", in brain" if fg else ""
            for k, baseline in cfg["cluscam"]:
                name = "published" if (k, baseline) == (10, "zero") else f"K={k} {baseline}"
                args = {"num_clusters": k, "baseline": baseline}
                out[f"ClusCAM {name}, {layer}{where}"] = ("cluscam", layer, args, fg)
            for method, label in (("scorecam", "Score-CAM"), ("gradcam", "Grad-CAM"), ("gradcampp", "Grad-CAM++")):
                out[f"{label}, {layer}{where}"] = (method, layer, {}, fg)
    own = {"num_clusters": bundle.num_clusters or 10, "baseline": bundle.baseline or "zero"}
    out["bundle setting"] = ("cluscam", bundle.target_layers, own, bundle.foreground)
    return out


def run(cfg: dict) -> dict:
    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.cam import select_num_clusters
    from monai_cluscam.metrics import attribution_outside_mask, energy_pointing_game, pointing_game
    from monai_cluscam.transforms import make_explainer

    bundle = load_bundle(BUNDLE_3D, device="cpu")
    net = bundle.network
    images, masks, labels = phantom_volumes(bundle, cfg["per_class"], ATROPHIC, cfg["shape"])
    regions = phantom_volumes(bundle, cfg["per_class"], ATROPHIC, cfg["shape"], field="region_mask")[1]
    brains = phantom_volumes(bundle, cfg["per_class"], ATROPHIC, cfg["shape"], field="brain_mask")[1]
    uniform_region = float(regions.float().mean())
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant maps on the smoke run's tiny phantoms
        for name, (method, layer, kwargs, fg) in variants(bundle, cfg).items():
            cam = make_explainer(net, method, layer, **kwargs)
            scores: dict[str, list] = {k: [] for k in ("energy", "region", "region_hit", "outside", "peak_in_brain")}
            start = time.perf_counter()
            for i in range(len(images)):
                x, m, r, b = images[i : i + 1], masks[i : i + 1], regions[i : i + 1], brains[i : i + 1]
                sal = cam(x, labels[i : i + 1], foreground=fg)
                scores["energy"].append(float(energy_pointing_game(sal, m)[0]))
                scores["region"].append(float(energy_pointing_game(sal, r)[0]))
                scores["region_hit"].append(bool(pointing_game(sal, r)[0]))
                scores["outside"].append(float(attribution_outside_mask(sal, b)[0]))
                scores["peak_in_brain"].append(bool(b.flatten()[int(sal.flatten().argmax())]))
            rows[name] = {"method": method, "layer": layer, "arguments": kwargs, "foreground": fg,
                          "energy_pointing_game": float(np.mean(scores["energy"])),
                          "region_energy_pointing_game": float(np.mean(scores["region"])),
                          "region_ratio_to_uniform": float(np.mean(scores["region"])) / uniform_region,
                          "region_pointing_game": float(np.mean(scores["region_hit"])),
                          "outside_brain": float(np.mean(scores["outside"])),
                          "outside_brain_max": float(np.max(scores["outside"])),
                          "peak_in_brain": float(np.mean(scores["peak_in_brain"])),
                          "seconds_per_volume": (time.perf_counter() - start) / len(images)}
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items() if isinstance(v, float)),
                  flush=True)
        validation, _, _ = phantom_volumes(bundle, cfg["validation_per_class"], [0, 1, 2, 3], cfg["shape"],
                                           seed=PHANTOM_VALIDATION_SEED)
        sel = select_num_clusters(net, bundle.target_layers, validation.split(4), candidates=cfg["k_candidates"],
                                  progress=False)
    return {
        "bundle": str(BUNDLE_3D.relative_to(REPO)),
        "model_commit": _model_commit(BUNDLE_3D),
        "target_layer": bundle.target_layers,
        "bundle_setting": {"num_clusters": bundle.num_clusters, "baseline": bundle.baseline,
                           "foreground": bundle.foreground},
        "volumes": len(images),
        "uniform_energy_pointing_game": float(masks.float().mean()),
        "uniform_region_energy_pointing_game": uniform_region,
        "uniform_outside_brain": float(1 - brains.float().mean()),
        "methods": rows,
        "k_selection": {"validation_volumes": len(validation), "candidates": sel.candidates,
                        "mean_score_diffs": sel.mean_score_diffs, "chosen": sel.num_clusters},
    }


def markdown(report: dict) -> str:
    meta, res = report["meta"], report["results"]
    sel, own = res["k_selection"], res["bundle_setting"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads.",
        "",
        f"`{res['bundle']}` (weights: commit `{res['model_commit'][:10]}`), {res['volumes']} test phantoms (seed "
        f"{PHANTOM_TEST_SEED}, atrophic classes), each explained for its true class. Bundle setting: "
        f"`{res['target_layer']}`, K={own['num_clusters']}, baseline {own['baseline']}, foreground "
        f"{own['foreground']}. Atrophy: the share of the map's mass in the voxels atrophy changed (uniform map "
        f"{res['uniform_energy_pointing_game']:.4f}). Region: the same against the anatomy atrophy is simulated in "
        "(lateral ventricles and medial temporal lobes, dilated; uniform map "
        f"{res['uniform_region_energy_pointing_game']:.4f}), with its ratio to the uniform map and the pointing "
        f"game. Outside brain: the map's mass outside the phantom's brain (uniform map "
        f"{res['uniform_outside_brain']:.2f}; mean and worst volume). Peak in brain: the share of maps whose "
        "maximum lies inside the brain.",
        "",
        "| variant | atrophy energy ↑ | region energy ↑ | x uniform | region pointing ↑ | outside brain ↓ | worst ↓ "
        "| peak in brain ↑ | s / volume |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in res["methods"].items():
        lines.append(f"| {name} | {row['energy_pointing_game']:.4f} | {row['region_energy_pointing_game']:.4f} | "
                     f"{row['region_ratio_to_uniform']:.1f} | {row['region_pointing_game']:.2f} | "
                     f"{row['outside_brain']:.2f} | {row['outside_brain_max']:.2f} | {row['peak_in_brain']:.2f} | "
                     f"{row['seconds_per_volume']:.2f} |")
    diffs = ", ".join(f"K={k}: {d:.3f}" for k, d in zip(sel["candidates"], sel["mean_score_diffs"], strict=True))
    lines += ["", f"Data-driven K on {sel['validation_volumes']} validation phantoms (seed {PHANTOM_VALIDATION_SEED}, "
              f"`{res['target_layer']}`): mean score differences {diffs}; chosen K = {sel['chosen']}."]
    return "\n".join(lines) + "\n"


def montage(cfg: dict, out: Path) -> Path:
    """The model card's picture: the first Moderate_Demented test phantom, three axial slices through the atrophy
    region (white contour), the maps of ClusCAM as published, of the bundle's setting, and of Score-CAM, Grad-CAM
    and Grad-CAM++ restricted to the brain alike, from the bundle's layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.transforms import make_explainer

    bundle = load_bundle(BUNDLE_3D, device="cpu")
    images, _, labels = phantom_volumes(bundle, 1, [1], cfg["shape"])
    regions = phantom_volumes(bundle, 1, [1], cfg["shape"], field="region_mask")[1]
    x, region, layer = images[:1], regions[0, 0], bundle.target_layers
    fg = bundle.foreground or PHANTOM_FOREGROUND
    own = {"num_clusters": bundle.num_clusters or 10, "baseline": bundle.baseline or "zero"}
    panels = [("ClusCAM as published", "cluscam", {"num_clusters": 10}, False),
              (f"bundle: ClusCAM K={own['num_clusters']} {own['baseline']}, in brain", "cluscam", own, fg),
              ("Score-CAM, in brain", "scorecam", {}, fg), ("Grad-CAM, in brain", "gradcam", {}, fg),
              ("Grad-CAM++, in brain", "gradcampp", {}, fg)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = [make_explainer(bundle.network, m, layer, **a)(x, labels[:1], foreground=f)[0, 0]
                for _, m, a, f in panels]
    zs = _axial_quartiles(region)
    columns = [("scan, atrophy region", None), *zip([p[0] for p in panels], maps, strict=True)]
    fig, axes = plt.subplots(len(zs), len(panels) + 1, figsize=(2.2 * (len(panels) + 1), 2.3 * len(zs)),
                             squeeze=False)
    for row, z in enumerate(zs):
        scan = x[0, 0, :, :, z].T.numpy()
        for col, (title, heat) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(scan, cmap="gray", origin="lower")
            if heat is not None:
                ax.imshow(heat[:, :, z].T.numpy(), cmap="jet", alpha=0.45, origin="lower", vmin=0, vmax=1)
            ax.contour(region[:, :, z].T.numpy(), levels=[0.5], colors="white", linewidths=0.8, origin="lower")
            ax.set_title((title if row == 0 else "") + ("" if col else f"\nz = {z}"), fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{BUNDLE_3D.name}: a Moderate_Demented test phantom, maps of its class from {layer}", fontsize=9)
    fig.tight_layout()
    path = out / "localisation_3d_montage.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _axial_quartiles(mask) -> list[int]:
    """Three axial indices through a 3D mask: the quartiles of the z of its voxels."""
    z = np.nonzero(mask.numpy())[2]
    return sorted({int(np.percentile(z, q)) for q in (25, 50, 75)}) if len(z) else [mask.shape[2] // 2]


def main(argv: list[str] | None = None) -> Path:
    args = common_parser(__doc__, "smoke run: tiny phantoms, few variants").parse_args(argv)
    cfg = settings(args.quick)
    out = run_benchmark("localisation_3d", args, cfg, lambda: run(cfg), markdown)
    montage(cfg, out)
    return out


if __name__ == "__main__":
    main()
