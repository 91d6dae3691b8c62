"""A PyTorch training loop that clips with gradcore's drop-in and watches the gradients.

An LSTM learns to add up a noisy sequence; the learning rate is high enough that the
unclipped gradients spike. The only change from a plain PyTorch loop is the clipping
line (``gct.clip_grad_norm_`` instead of ``torch.nn.utils.clip_grad_norm_``) plus a
``GradientMonitor`` that flags exploding gradients.

    python examples/torch_training_loop.py --steps 200
    python examples/torch_training_loop.py --compare-torch   # same run with torch's clip

With ``--compare-torch`` the run is repeated with ``torch.nn.utils.clip_grad_norm_`` from
the same seed and the largest differences are printed (float64: the two agree to
rounding, amplified a little by training).
"""

from __future__ import annotations

import argparse

import torch

import gradcore
import gradcore.torch as gct


class Summer(torch.nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lstm = torch.nn.LSTM(1, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def train(steps: int, seed: int, clip, dtype=torch.float64, monitor=None):
    torch.manual_seed(seed)
    model = Summer(hidden=32).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed + 1)
    totals = []
    for _ in range(steps):
        x = torch.randn(16, 20, 1, generator=generator, dtype=dtype)
        target = x.sum(dim=1)
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        if monitor is not None:  # the gradients as backward left them, before clipping
            monitor.step([p.grad for p in model.parameters()], [p.detach() for p in model.parameters()],
                         loss=loss.item())
        totals.append(float(clip(model.parameters(), max_norm=1.0)))
        optimizer.step()
    return model, loss.item(), totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-torch", action="store_true")
    args = parser.parse_args(argv)

    names = [n for n, _ in Summer(32).named_parameters()]
    monitor = gradcore.GradientMonitor(names, window=20, warmup=10)
    model, loss, totals = train(args.steps, args.seed, gct.clip_grad_norm_, monitor=monitor)
    clipped = sum(t > 1.0 for t in totals)
    print(f"final_loss {loss:.6g}")
    print(f"first_total_norm {totals[0]:.6g}")
    print(f"clipped_steps {clipped} of {len(totals)}")
    print(monitor.summary())
    if args.compare_torch:
        reference, _, ref_totals = train(args.steps, args.seed, torch.nn.utils.clip_grad_norm_)
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), reference.parameters()))
        norm_diff = max(abs(a - b) / b for a, b in zip(totals, ref_totals))
        print(f"max_weight_difference_vs_torch {diff:.3g}")
        print(f"max_total_norm_rel_difference_vs_torch {norm_diff:.3g}")


if __name__ == "__main__":
    main()
