"""Differential privacy side by side: the same model trained without privacy and with DP-SGD
(plugins/privacy_opacus.py, Opacus) at ε ∈ {0.5, 1, 3, 8}, δ = 1/(10·n_train), prv accountant.

    python benchmarks/privacy.py [--seeds 3] [--epochs 30] [--timing-epochs 15]

Accuracy: plugins.nets.TabularMLP (standardize ▸ Linear(64) ▸ ReLU ▸ Dropout(0.1) ▸ Linear) on
breast cancer (framework.testing's 70/15/15 split, 398 training rows, test = 86 rows: one row is
1.16 points) and on digits (70/15/15 stratified, 1257 training rows, 270 test rows); Adam,
lr 1e-2, (expected) batch 64, a fixed number of epochs; test accuracy of the epoch with the best
validation accuracy (what the trainer checkpoints; ties: lower val loss) and of the last epoch,
mean ± sd over seeds. The noise is calibrated so that ε reaches the target after all planned
epochs, and ε spent is counted to the last epoch (choosing an epoch by validation score is
post-processing). Same learning rate for both: not tuned for DP-SGD.

Cost: wall time of one training epoch, private (Poisson sampling, per-sample gradients, clipping,
noise) vs non-private (shuffled minibatches of the same expected size, same DataLoader over a
TensorDataset), one thread as in a Tune trial, median of ``--timing-epochs`` epochs after one
warm-up round, private and non-private epochs alternating, for the MLP and for
plugins.nets.ImageCNN (one 8-channel conv block) on digits.
Calibrating the noise (a one-off per trial) is reported separately.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EPSILONS = (0.5, 1.0, 3.0, 8.0)
BATCH, LR, HIDDEN, DROPOUT = 64, 1e-2, 64, 0.1


def datasets():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from framework.testing.data import breast_cancer_splits

    splits = breast_cancer_splits()
    out = {"breast_cancer": {part: splits.arrays(part) for part in ("train", "val", "test")}}
    x, y = load_digits(return_X_y=True)
    xtr, xrest, ytr, yrest = train_test_split(x.astype(np.float32), y.astype(np.int64), test_size=0.3,
                                              stratify=y, random_state=42)
    xva, xte, yva, yte = train_test_split(xrest, yrest, test_size=0.5, stratify=yrest, random_state=42)
    out["digits"] = {"train": (xtr, ytr), "val": (xva, yva), "test": (xte, yte)}
    return out


def _stats(x):
    std = x.std(0)
    return x.mean(0), np.where(std > 1e-6, std, 1.0)  # digits has constant (always 0) pixels


def build(kind: str, x, n_classes: int, seed: int):
    import torch

    from plugins.nets import ImageCNN, TabularMLP

    torch.manual_seed(seed)
    mean, std = _stats(x)
    if kind == "mlp":
        return TabularMLP(x.shape[1], n_classes, hidden=HIDDEN, layers=1, dropout=DROPOUT, mean=mean, std=std)
    return ImageCNN(x.shape[1], n_classes, conv_channels=[8], hidden=HIDDEN, dropout=DROPOUT, mean=mean, std=std)


def plain_epoch(module, optimizer, loader):
    import torch

    module.train()
    for xb, yb in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xb), yb).backward()
        optimizer.step()


def plain_loader(x, y, seed: int):
    import torch

    data = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def test_metrics(module, x, y):
    import torch

    module.eval()
    with torch.no_grad():
        logits = module(torch.tensor(x))
    acc = float((logits.argmax(1).numpy() == y).mean())
    return acc, float(torch.nn.functional.cross_entropy(logits, torch.tensor(y)))


def run_accuracy(data, epochs: int, seeds: int):
    import torch

    from plugins.privacy_opacus import PrivacyConfig, make_private

    rows = []
    for name, parts in data.items():
        (x, y), (xv, yv), (xt, yt) = parts["train"], parts["val"], parts["test"]
        n_classes = int(y.max()) + 1
        for eps in (None,) + EPSILONS:
            accs, last_accs, losses, spent, calib = [], [], [], [], []
            sigma = delta = None
            for seed in range(seeds):
                module = build("mlp", x, n_classes, seed)
                optimizer = torch.optim.Adam(module.parameters(), lr=LR)
                if eps is None:
                    loader = plain_loader(x, y, seed)

                    def epoch():
                        plain_epoch(module, optimizer, loader)
                else:
                    t0 = time.perf_counter()
                    pt = make_private(module, optimizer, x, y, BATCH, epochs,
                                      PrivacyConfig(enabled=True, target_epsilon=eps), seed=seed)
                    calib.append(time.perf_counter() - t0)
                    epoch = pt.train_epoch
                best, best_state = None, None
                for _ in range(epochs):
                    epoch()
                    acc, loss = test_metrics(module, xv, yv)  # module: the original, trained in place
                    if best is None or (acc, -loss) > best:
                        best, best_state = (acc, -loss), {k: v.clone() for k, v in module.state_dict().items()}
                if eps is not None:
                    spent.append(pt.epsilon())
                    sigma, delta = pt.noise_multiplier, pt.delta
                    module = pt.close()
                last_accs.append(test_metrics(module, xt, yt)[0])
                module.load_state_dict(best_state)
                acc, loss = test_metrics(module, xt, yt)
                accs.append(acc)
                losses.append(loss)
            rows.append({"dataset": name, "n_train": len(x), "n_test": len(xt), "eps": eps, "spent": spent,
                         "sigma": sigma, "delta": delta, "accs": accs, "last_accs": last_accs, "losses": losses,
                         "calib_s": calib[0] if calib else None})
            print(f"  {name:13s} eps={eps!s:5s} acc={statistics.mean(accs):.4f} last={statistics.mean(last_accs):.4f}",
                  file=sys.stderr, flush=True)
    return rows


def run_timing(data, epochs: int):
    """Private and non-private epochs alternate, so that load from elsewhere hits both alike."""
    import torch

    from plugins.privacy_opacus import PrivacyConfig, make_private

    cases = [("mlp", "breast_cancer"), ("mlp", "digits"), ("cnn", "digits")]
    rows = []
    config = PrivacyConfig(enabled=True, target_epsilon=None, noise_multiplier=1.0, accountant="rdp")
    for kind, name in cases:
        x, y = data[name]["train"]
        n_classes = int(y.max()) + 1
        plain = build(kind, x, n_classes, 0)
        plain_opt = torch.optim.Adam(plain.parameters(), lr=LR)
        loader = plain_loader(x, y, 0)
        private = build(kind, x, n_classes, 0)
        pt = make_private(private, torch.optim.Adam(private.parameters(), lr=LR), x, y, BATCH, epochs + 1,
                          config, seed=0)
        steps = {False: lambda: plain_epoch(plain, plain_opt, loader), True: pt.train_epoch}
        samples = {False: [], True: []}
        for i in range(epochs + 1):
            for is_private in (False, True):
                t0 = time.perf_counter()
                steps[is_private]()
                if i:  # the first round warms up
                    samples[is_private].append(time.perf_counter() - t0)
        rows.append({"model": kind, "dataset": name, "n_train": len(x),
                     "params": sum(p.numel() for p in plain.parameters()),
                     "plain_ms": statistics.median(samples[False]) * 1e3,
                     "private_ms": statistics.median(samples[True]) * 1e3})
    return rows


def markdown(acc_rows, time_rows, args) -> str:
    lines = [
        f"Accuracy: {args.epochs} epochs, weights of the best validation epoch (and of the last epoch), mean ± sd "
        f"over {args.seeds} seeds; δ = 1/(10·n_train); prv accountant; ε spent = after all epochs (mean over seeds).",
        "",
        "| dataset | training | ε target | ε spent | δ | noise σ | test accuracy (best val epoch) | Δ vs non-private "
        "(points) | test loss | test accuracy (last epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for r in acc_rows:
        acc = statistics.mean(r["accs"])
        sd = statistics.stdev(r["accs"]) if len(r["accs"]) > 1 else 0.0
        loss = statistics.mean(r["losses"])
        last = statistics.mean(r["last_accs"])
        if r["eps"] is None:
            base[r["dataset"]] = acc
            lines.append(f"| {r['dataset']} (n={r['n_train']}, test {r['n_test']}) | non-private | – | ∞ | – | 0 | "
                         f"{acc:.4f} ± {sd:.4f} | – | {loss:.3f} | {last:.4f} |")
        else:
            lines.append(f"| {r['dataset']} | DP-SGD | {r['eps']:g} | {statistics.mean(r['spent']):.3f} | "
                         f"{r['delta']:.2e} | {r['sigma']:.2f} | {acc:.4f} ± {sd:.4f} | "
                         f"{100 * (acc - base[r['dataset']]):+.1f} | {loss:.3f} | {last:.4f} |")
    lines += [
        "",
        f"Cost of one training epoch (1 thread, median of {args.timing_epochs} epochs; expected batch {BATCH}):",
        "",
        "| model | dataset | rows | parameters | non-private epoch (ms) | private epoch (ms) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in time_rows:
        lines.append(f"| {r['model']} | {r['dataset']} | {r['n_train']} | {r['params']} | {r['plain_ms']:.1f} | "
                     f"{r['private_ms']:.1f} | {r['private_ms'] / r['plain_ms']:.2f}x |")
    calib = [(r["dataset"], r["eps"], r["calib_s"]) for r in acc_rows if r["calib_s"] is not None]
    lines += ["", "Noise calibration (once per trial; first call includes importing opacus): "
              + ", ".join(f"{d} ε={e:g}: {s:.2f} s" for d, e, s in calib)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--timing-epochs", type=int, default=15)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = datasets()
    acc_rows = run_accuracy(data, args.epochs, args.seeds)
    time_rows = run_timing(data, args.timing_epochs)
    import opacus

    print(f"python benchmarks/privacy.py --seeds {args.seeds} --epochs {args.epochs} "
          f"--timing-epochs {args.timing_epochs}  (torch {torch.__version__}, opacus {opacus.__version__}, "
          f"{time.perf_counter() - t0:.0f} s)\n")
    print(markdown(acc_rows, time_rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
