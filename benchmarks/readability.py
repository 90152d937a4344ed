"""Maps a reader can use: detail, heat on the background, and faithfulness, lever by lever, on the 2D bundle.

The Alzheimer MRI bundle's classifier on held-out test slices (``slices/``, never trained on), each explained for
the predicted class, the bundle's ``foreground`` option off. Rows, lever by lever:

1. ClusCAM from ``layer4`` as published (``zero_unmaskable=False``): the 2D bundle before issue 19;
2. the same with no attribution where masking cannot change the input (``zero_unmaskable=True``, the default);
3. the same from several layers (``--layers``, default ``layer2,layer3,layer4``: each clustered and scored on its
   own, the maps fused by their geometric mean);
4. the same with the clusters' members weighted by their activation range (``centroids="weighted"``, the
   default): the shipped configuration;
5. Grad-CAM, Grad-CAM++, Score-CAM and DecomCAM from the same layers, on the same footing (``zero_unmaskable``).

Per row: detail (median correlation length, px), the share of the map on black background farther than 4 px from
the brain and how often the peak lies there, Average Drop, Increase in Confidence, Average Gain, Deletion AUC
(zeros), Insertion AUC (blurred input), ROAD (most relevant first, noisy linear imputation), with standard errors;
seconds and forward passes per image. The methods run round-robin on each batch.

    python benchmarks/readability.py             # 480 test slices
    python benchmarks/readability.py --quick     # smoke run: 4 slices, few steps

Writes ``readability.json``, ``readability.md`` and ``readability_gallery.png`` (four slices, the maps row by row)
into ``--output`` (default ``benchmarks/results``; ``--gallery-only`` draws the figure alone).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_2D,
    _model_commit,
    common_parser,
    faithfulness_scores,
    load_test_slices,
    output_dir,
    run_benchmark,
    summarise,
)

from monai_cluscam.cam.registry import method_label, method_spec  # noqa: E402
from monai_cluscam.metrics.readability import background_mask, correlation_length, peak_on_background  # noqa: E402
from monai_cluscam.metrics.road import road_curve  # noqa: E402

METRICS = [
    ("correlation_length", "detail (px) ↓", 1), ("background_share", "on background ↓", 3),
    ("peak_on_background", "peak on bg ↓", 3), ("average_drop", "Avg Drop ↓", 2),
    ("increase_in_confidence", "Incr. Conf. ↑", 2), ("average_gain", "Avg Gain ↑", 2),
    ("deletion_auc", "Deletion ↓", 4), ("insertion_auc", "Insertion ↑", 4), ("road_morf", "ROAD MoRF ↓", 4),
]
FAITHFULNESS = [("average_drop", "lower"), ("increase_in_confidence", "higher"), ("average_gain", "higher"),
                ("deletion_auc", "lower"), ("insertion_auc", "higher")]
BASELINES = ["gradcam", "gradcampp", "scorecam", "decomcam"]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_images": 4, "batch_images": 2, "steps": 4, "road_fractions": [0.3, 0.6], "chunk": 64,
                "num_clusters": 3}
    return {"n_images": 480, "batch_images": 16, "steps": 20, "road_fractions": [0.1, 0.3, 0.5, 0.7, 0.9],
            "chunk": 64, "num_clusters": 10}


def rows(layers: list[str], cfg: dict) -> dict:
    """name -> (method, target layers, method arguments)."""
    k = cfg["num_clusters"]
    mean = {"num_clusters": k, "centroids": "mean"}
    out = {
        "cluscam_layer4_published": ("cluscam", ["layer4"], {**mean, "zero_unmaskable": False}),
        "cluscam_layer4": ("cluscam", ["layer4"], mean),
        "cluscam_layers": ("cluscam", layers, mean),
        "cluscam": ("cluscam", layers, {"num_clusters": k, "centroids": "weighted"}),
    }
    out.update({m: (m, layers, {"zero_unmaskable": True}) for m in BASELINES})
    return out


def passes(method: str, network: torch.nn.Module, layers: list[str], args: dict) -> int:
    """Forward passes per image (the unmasked one included); backward passes are not counted."""
    named = dict(network.named_modules())
    channels = []
    for layer in layers:
        convs = [m for m in named[layer].modules() if isinstance(m, torch.nn.Conv2d)]
        channels.append(convs[-1].out_channels)
    if method == "cluscam":
        return 1 + sum(min(args["num_clusters"], c) for c in channels)
    if method == "scorecam":
        return 1 + sum(channels)
    if method == "decomcam":
        return 1 + sum(min(10, c) for c in channels)
    return 1


def run(args, cfg: dict) -> dict:
    from monai_cluscam.bundle import load_bundle

    bundle = load_bundle(BUNDLE_2D, device="cpu")
    net = bundle.network
    x_all, labels, _ = load_test_slices(args.data, args.split, "test", cfg["n_images"], bundle.preprocessing)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    specs = rows(layers, cfg)
    cams = {name: method_spec(m).cls(net, lay, **kw) for name, (m, lay, kw) in specs.items()}
    per_image = {name: {key: [] for key, _, _ in METRICS} for name in specs}
    seconds = dict.fromkeys(specs, 0.0)
    correct, done, uniform_bg = 0, 0, []
    partial = args.partial
    if partial is not None and partial.is_file():  # resume where an interrupted run stopped
        state = json.loads(partial.read_text())
        same = state.get("rows") == json.loads(json.dumps(specs))  # a run of other rows is not resumed
        if same and state["settings"] == cfg and state["layers"] == layers:
            per_image, seconds, correct, done, uniform_bg = (state[k] for k in ("per_image", "seconds", "correct",
                                                                                 "done", "uniform_bg"))
            print(f"resuming after {done} slices from {partial}", flush=True)
    began = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(done, len(x_all), cfg["batch_images"]):
            if args.time_limit is not None and time.monotonic() - began > args.time_limit:
                print(f"time limit reached after {start} slices; the report covers those", flush=True)
                break
            x = x_all[start : start + cfg["batch_images"]]
            with torch.no_grad():  # not inference mode: the gradient methods take the classes into autograd
                classes = net(x).argmax(1)
            correct += int((classes == labels[start : start + len(x)]).sum())
            background = background_mask(x)
            uniform_bg += background.flatten(1).float().mean(1).tolist()
            order = list(specs)
            shift = (start // cfg["batch_images"]) % len(order)
            for name in order[shift:] + order[:shift]:  # round-robin, so load falls on every method alike
                t = time.perf_counter()
                sal = cams[name](x, class_idx=classes)
                seconds[name] += time.perf_counter() - t
                values, _, _ = faithfulness_scores(net, x, sal, classes, cfg)
                road = road_curve(net, x, sal, classes, fractions=cfg["road_fractions"])
                mass = sal.flatten(1).sum(1).clamp_min(1e-12)
                share = (sal.flatten(1) * background.flatten(1)).sum(1) / mass
                values.update(road_morf=road.auc.tolist(), correlation_length=correlation_length(sal).tolist(),
                              background_share=share.tolist(), peak_on_background=peak_on_background(sal, x).tolist())
                for key, v in values.items():
                    per_image[name][key] += v
            print(f"{start + len(x)}/{len(x_all)} slices", flush=True)
            if partial is not None:
                partial.write_text(json.dumps({"settings": cfg, "layers": layers, "rows": specs, "per_image": per_image,
                                               "seconds": seconds, "correct": correct, "done": start + len(x),
                                               "uniform_bg": uniform_bg}))
    n = len(per_image["cluscam"]["average_drop"])
    results = {}
    for name, (method, lay, kw) in specs.items():
        vals = {k: [v for v in vs if np.isfinite(v)] for k, vs in per_image[name].items()}
        row = summarise(vals)
        row["correlation_length"] = float(np.median(vals["correlation_length"]))
        row.update(method=method, layers=lay, args=kw, label=method_label(method), seconds_per_image=seconds[name] / n,
                   forward_passes=passes(method, net, lay, kw))
        results[name] = row
    ours = results["cluscam"]
    wins = {b: [k for k, d in FAITHFULNESS if (ours[k] < results[b][k] if d == "lower" else ours[k] > results[b][k])]
            for b in BASELINES}
    return {"bundle": str(BUNDLE_2D.relative_to(BUNDLE_2D.parents[1])), "weights": _model_commit(BUNDLE_2D),
            "n_images": n, "planned": len(x_all), "accuracy": correct / n, "layers": layers, "rows": results,
            "wins": wins,
            "uniform_background_share": float(np.mean(uniform_bg)),
            "speedup_vs_scorecam": results["scorecam"]["seconds_per_image"] / ours["seconds_per_image"]}


def markdown(report: dict) -> str:
    meta, res = report["meta"], report["results"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads.",
        "",
        f"`{res['bundle']}` (weights `{res['weights']}`; accuracy {res['accuracy']:.3f} on these slices), "
        f"{res['n_images']} held-out test slices"
        + (f" (the first {res['n_images']} of {res['planned']} planned: the run stopped at its time limit; "
           "`--partial` resumes it)" if res["n_images"] < res.get("planned", res["n_images"]) else "")
        + ", each explained for the predicted class, foreground option off. "
        f"Deletion to zeros, insertion from a blurred input, {report['settings']['steps']} steps; ROAD removes "
        f"{report['settings']['road_fractions']} of the pixels, most relevant first, filled by noisy linear "
        "imputation (mean over the fractions). Means (± standard error); detail is the median correlation length; "
        f"a uniform map has {res['uniform_background_share']:.3f} of its mass on the background.",
        "",
        "| row | layers | " + " | ".join(label for _, label, _ in METRICS) + " | s / image | passes |",
        "|---|---|" + "---:|" * (len(METRICS) + 2),
    ]
    names = {"cluscam_layer4_published": "ClusCAM as published", "cluscam_layer4": "ClusCAM, unmaskable voxels zero",
             "cluscam_layers": "ClusCAM, several layers",
             "cluscam": "ClusCAM, several layers, weighted centroids (shipped)"}
    for name, row in res["rows"].items():
        cells = []
        for key, _, digits in METRICS:
            se = row.get(f"{key}_se")
            cells.append(f"{row[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se and key != "correlation_length"
                                                      else ""))
        label = names.get(name, f"{row['label']}, same layers, unmaskable voxels zero")
        lines.append(f"| {label} | {'+'.join(row['layers'])} | " + " | ".join(cells)
                     + f" | {row['seconds_per_image']:.3f} | {row['forward_passes']} |")
    lines += ["", f"ClusCAM (shipped) is {res['speedup_vs_scorecam']:.1f}x faster than Score-CAM on the same "
              "layers in this run. Better than each baseline on (of the 5 faithfulness metrics):", ""]
    for b, better in res["wins"].items():
        lines.append(f"- {method_label(b)}: {len(better)} ({', '.join(better) or 'none'})")
    return "\n".join(lines) + "\n"


def speed(args, cfg: dict, out: Path, count: int = 8, repeats: int = 5) -> dict:
    """Seconds per image of ClusCAM and Score-CAM on the same layers, alternating on batches of 4 of the first
    ``count`` test slices, ``repeats`` times; medians and their ratio, written to ``readability_speed.json`` (the
    faithfulness run's own timings share the machine with its metrics, so this is the figure to quote)."""
    from monai_cluscam.bundle import load_bundle

    bundle = load_bundle(BUNDLE_2D, device="cpu")
    x, _, _ = load_test_slices(args.data, args.split, "test", count, bundle.preprocessing)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    specs = {k: v for k, v in rows(layers, cfg).items() if k in ("cluscam", "scorecam", "cluscam_layer4")}
    cams = {k: method_spec(m).cls(bundle.network, lay, **kw) for k, (m, lay, kw) in specs.items()}
    times: dict[str, list[float]] = {k: [] for k in cams}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cam in cams.values():  # warm-up
            cam(x[:1])
        for _ in range(repeats):
            for batch in x.split(4):
                for name, cam in cams.items():
                    t = time.perf_counter()
                    cam(batch)
                    times[name].append((time.perf_counter() - t) / len(batch))
    medians = {k: float(np.median(v)) for k, v in times.items()}
    report = {"layers": layers, "images": count, "repeats": repeats, "seconds_per_image": medians,
              "speedup_vs_scorecam": medians["scorecam"] / medians["cluscam"],
              "forward_passes": {k: passes(m, bundle.network, lay, kw) for k, (m, lay, kw) in specs.items()}}
    (out / "readability_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def gallery(args, cfg: dict, out: Path, count: int = 4) -> Path:
    """``readability_gallery.png``: the first ``count`` test slices, and the map of each row on each (the
    published layer4 map, the unmaskable rule, several layers, weighted centroids, Score-CAM on the same
    layers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_cluscam.bundle import load_bundle

    bundle = load_bundle(BUNDLE_2D, device="cpu")
    x, _, names = load_test_slices(args.data, args.split, "test", count, bundle.preprocessing)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    shown = {k: v for k, v in rows(layers, cfg).items() if k in ("cluscam_layer4_published", "cluscam_layer4",
                                                                   "cluscam_layers", "cluscam", "scorecam")}
    titles = ["ClusCAM as published\n(layer4)", "unmaskable voxels zero\n(layer4)",
              f"several layers\n({'+'.join(layers)})", "weighted centroids\n(shipped)",
              f"Score-CAM\n({'+'.join(layers)})"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = {k: method_spec(m).cls(bundle.network, lay, **kw)(x) for k, (m, lay, kw) in shown.items()}
    fig, axes = plt.subplots(count, len(shown) + 1, figsize=(2.4 * (len(shown) + 1), 2.4 * count))
    for r in range(count):
        axes[r, 0].imshow(x[r, 0].T, cmap="gray")
        axes[r, 0].set_ylabel(names[r].split("_", 1)[0], fontsize=8)
        for c, key in enumerate(shown, start=1):
            axes[r, c].imshow(x[r, 0].T, cmap="gray")
            axes[r, c].imshow(maps[key][r, 0].T, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    for c, title in enumerate(["slice", *titles]):
        axes[0, c].set_title(title, fontsize=8)
    fig.tight_layout()
    path = out / "readability_gallery.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = common_parser(__doc__, "smoke run: 4 slices, few steps")
    parser.add_argument("--layers", default="layer2,layer3,layer4", help="the several layers (default %(default)s)")
    parser.add_argument("--n-images", type=int, default=None, help="use the first N test slices")
    parser.add_argument("--gallery-only", action="store_true", help="draw readability_gallery.png only")
    parser.add_argument("--speed-only", action="store_true",
                        help="time ClusCAM against Score-CAM on the same layers only (readability_speed.json)")
    parser.add_argument("--partial", type=Path, default=None,
                        help="keep the per-slice results here after every batch, and resume from them")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="start no new batch after this many seconds; the report covers the slices done")
    args = parser.parse_args(argv)
    cfg = settings(args.quick)
    if args.n_images:
        cfg["n_images"] = args.n_images
    if args.speed_only:
        out = output_dir(args, "readability")
        print(json.dumps(speed(args, cfg, out, 4 if args.quick else 8, 1 if args.quick else 5), indent=1))
        return out
    if args.gallery_only:
        out = output_dir(args, "readability")
    else:
        out = run_benchmark("readability", args, cfg, lambda: run(args, cfg), markdown)
    print(f"wrote {gallery(args, cfg, out, 2 if args.quick else 4)}")
    return out


if __name__ == "__main__":
    main()
