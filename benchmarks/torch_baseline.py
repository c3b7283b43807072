"""The PyTorch CPU baseline of benchmarks/quality.py: an LSTM as a user would
write it, trained on the same split of the built-in corpus for the same
wall-clock budget with the same threads and the same learning-rate schedule.

    python -m benchmarks.torch_baseline --minutes 10 --seed 0 --threads 2 --hidden 384 --eta 3e-3 --bf16

nn.Embedding(K, 64) -> nn.LSTM(64, H, 2 layers) -> nn.Linear(H, K); 32
streams over 32 contiguous segments of the training split, 64 characters per
update, state carried between updates (reset at the end of a segment), mean
cross-entropy, Adam, gradients clipped to global norm 5. The rate warms up
over 200 updates and then follows a cosine to 5 % of eta over the time budget,
as `charrnn train --preset quality` does. With --bf16 the forward pass runs
under torch.autocast("cpu", dtype=torch.bfloat16), the strongest thing a
user can write where bfloat16 trains faster than float32 (AMX, or
AVX512-BF16 on AMD; benchmarks/README.md) (weights and optimiser stay
float32). The validation loss is computed like charrnn_ext's: the whole
held-out split read by 32 streams over contiguous segments (the remainder
continued by the last stream), summed and divided by the number of
predictions, in float32. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--eta", type=float, default=2e-3)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    args = ap.parse_args(argv)

    import torch

    import charrnn_ext as cx

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = cx.load_corpus()
    K, E, H, B, T = corpus.vocab.size, 64, args.hidden, 32, 64
    warmup, final = 200, 0.05  # the quality preset's schedule

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(K, E)
            self.lstm = torch.nn.LSTM(E, H, 2, batch_first=True)
            self.out = torch.nn.Linear(H, K)

        def forward(self, x, state):
            y, state = self.lstm(self.embed(x), state)
            return self.out(y), state

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=args.eta)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    train = torch.from_numpy(corpus.train.astype(np.int64))
    L = train.numel() // B
    seg = train[: B * L].view(B, L)
    state, pos, updates = None, 0, 0
    budget = 60.0 * args.minutes
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget:
        shape = 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed / budget)))
        lr = args.eta * (final + (1.0 - final) * shape) * min(1.0, (updates + 1) / warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + T + 1 > L:
            pos, state = 0, None
        x, y = seg[:, pos : pos + T], seg[:, pos + 1 : pos + T + 1]
        with autocast():
            logits, state = net(x, state)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, K), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach().float() for s in state)
        pos += T
        updates += 1
    seconds = time.perf_counter() - t0

    val = torch.from_numpy(corpus.val.astype(np.int64))
    n = val.numel() - 1
    each = n // B
    total = 0.0
    with torch.no_grad():
        streams = torch.stack([val[s * each : (s + 1) * each + 1] for s in range(B)])
        state = None
        for t0_ in range(0, each, 256):
            x = streams[:, t0_ : min(each, t0_ + 256)]
            y = streams[:, t0_ + 1 : min(each, t0_ + 256) + 1]
            logits, state = net(x, state)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, K), y.reshape(-1), reduction="sum"))
        tail = val[B * each :]
        if tail.numel() > 1:
            last = tuple(s[:, -1:].contiguous() for s in state)
            logits, _ = net(tail[:-1].view(1, -1), last)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, K), tail[1:], reduction="sum"))
    print(
        json.dumps(
            {
                "val_loss": total / n,
                "updates": updates,
                "seconds": seconds,
                "chars_per_s": updates * B * T / seconds,
                "n_params": sum(p.numel() for p in net.parameters()),
                "hidden": H,
                "eta": args.eta,
                "bf16": args.bf16,
                "torch": torch.__version__,
                "description": f"nn.LSTM 2x{H}, embedding {E}, B={B}, T={T}, Adam {args.eta:g} (warm-up, cosine), "
                f"global-norm clip 5, {'bf16 autocast' if args.bf16 else 'float32'}",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
