"""The PyTorch CPU baseline of benchmarks/quality.py: an LSTM as a user would
write it, trained on the same split of the built-in corpus for the same
wall-clock budget with the same threads.

    python -m benchmarks.torch_baseline --minutes 10 --seed 0 --threads 2

nn.Embedding(K, 64) -> nn.LSTM(64, 256, 2 layers) -> nn.Linear(256, K); 32
streams over 32 contiguous segments of the training split, 64 characters per
update, state carried between updates (reset at the end of a segment), mean
cross-entropy, Adam 2e-3, gradients clipped to global norm 5. The validation
loss is computed like charrnn_ext's: the whole held-out split read by 32
streams over contiguous segments (the remainder continued by the last stream),
summed and divided by the number of predictions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    import charrnn_ext as cx

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = cx.load_corpus()
    K, E, H, B, T = corpus.vocab.size, 64, 256, 32, 64

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
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    train = torch.from_numpy(corpus.train.astype(np.int64))
    L = train.numel() // B
    seg = train[: B * L].view(B, L)
    state, pos, updates = None, 0, 0
    budget = 60.0 * args.minutes
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget:
        if pos + T + 1 > L:
            pos, state = 0, None
        x, y = seg[:, pos : pos + T], seg[:, pos + 1 : pos + T + 1]
        logits, state = net(x, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, K), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in state)
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
                "eta": 2e-3,
                "description": f"nn.LSTM 2x{H}, embedding {E}, B={B}, T={T}, Adam 2e-3, global-norm clip 5",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
