"""An independent, literal statement of the published ClusCAM algorithm, used as the test oracle.

One image at a time: upsample every channel map to the input size (bilinear/trilinear,
align_corners=False), min-max each (constant maps left as they are), scikit-learn KMeans with
k-means++ and random_state=seed at input resolution, one masked forward pass per centroid, prune the
floor(r*K) lowest score differences, softmax(d / tau), ReLU of the weighted sum, min-max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans


def reference_cluscam(model, layer, x, class_idx=None, k=10, r=0.5, tau=0.5, seed=0, backward=False):
    """``backward=True`` also back-propagates the base score, as the published code does (it does not
    change the map; the speed benchmark uses it to time the published algorithm's full cost)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, a, o: store.__setitem__("a", o.detach()))
    try:
        with torch.set_grad_enabled(backward):
            logits = model(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            c = int(logits.argmax(1)) if class_idx is None else int(class_idx)
            if backward:
                model.zero_grad()
                logits[0, c].backward()
    finally:
        handle.remove()
    base = float(logits[0, c])
    acts = store["a"][0]
    size = x.shape[2:]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    maps = []
    for ch in acts:
        up = F.interpolate(ch[None, None], size=size, mode=mode, align_corners=False)[0, 0]
        if up.max() != up.min():
            up = (up - up.min()) / (up.max() - up.min())
        maps.append(up)
    flat = torch.stack(maps).reshape(len(maps), -1).numpy()
    km = KMeans(n_clusters=k, init="k-means++", random_state=seed).fit(flat)
    reps = torch.from_numpy(km.cluster_centers_).float().reshape(k, *size)
    diffs = torch.zeros(k)
    with torch.no_grad():
        for i in range(k):
            out = model(x * reps[i][None, None])
            out = out[0] if isinstance(out, tuple) else out
            diffs[i] = out[0, c] - base
    n_drop = int(r * k)
    if n_drop:
        diffs[torch.argsort(diffs)[:n_drop]] = float("-inf")
    w = F.softmax(diffs / tau, dim=0)
    sal = F.relu((w.view(-1, *[1] * len(size)) * reps).sum(0))
    return (sal - sal.min()) / (sal.max() - sal.min())
