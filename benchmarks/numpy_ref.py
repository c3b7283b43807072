"""The yardstick: a min-char-rnn style trainer in plain NumPy.

One training step = forward over seq_length characters one timestep at a
time, backpropagation through time one timestep at a time, then elementwise
clipping and AdaGrad -- the classic loop, written as a trainer object so the
harness can time it the same way as the C++ core.
"""
from __future__ import annotations

import numpy as np


class NumpyCharRNN:
    def __init__(self, K: int, m: int, seed: int = 0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.K, self.m = K, m
        self.U = (0.01 * rng.standard_normal((m, K))).astype(dtype)
        self.W = (0.01 * rng.standard_normal((m, m))).astype(dtype)
        self.V = (0.01 * rng.standard_normal((K, m))).astype(dtype)
        self.b = np.zeros(m, dtype)
        self.c = np.zeros(K, dtype)
        self.mem = [np.zeros_like(p) for p in (self.U, self.W, self.V, self.b, self.c)]
        self.h = np.zeros(m, dtype)

    def step(self, X, Y, eta=0.1, clip=5.0, eps=1e-8) -> float:
        U, W, V, b, c = self.U, self.W, self.V, self.b, self.c
        T = len(X)
        hs, ps = {-1: self.h}, {}
        loss = 0.0
        for t in range(T):
            hs[t] = np.tanh(W @ hs[t - 1] + U[:, X[t]] + b)
            o = V @ hs[t] + c
            e = np.exp(o - o.max())
            ps[t] = e / e.sum()
            loss -= np.log(ps[t][Y[t]])
        dU, dW, dV = np.zeros_like(U), np.zeros_like(W), np.zeros_like(V)
        db, dc = np.zeros_like(b), np.zeros_like(c)
        dh_next = np.zeros_like(self.h)
        for t in reversed(range(T)):
            do = ps[t].copy()
            do[Y[t]] -= 1
            dV += np.outer(do, hs[t])
            dc += do
            dh = V.T @ do + dh_next
            da = (1 - hs[t] * hs[t]) * dh
            dU[:, X[t]] += da
            db += da
            dW += np.outer(da, hs[t - 1])
            dh_next = W.T @ da
        for p, g, mem in zip((U, W, V, b, c), (dU, dW, dV, db, dc), self.mem):
            np.clip(g, -clip, clip, out=g)
            mem += g * g
            p -= eta * g / np.sqrt(mem + eps)
        self.h = hs[T - 1]
        return float(loss)

    def train(self, data, n_steps: int, seq_length: int = 25, pos: int = 0) -> int:
        for _ in range(n_steps):
            if pos + seq_length + 1 > len(data):
                pos, self.h = 0, np.zeros_like(self.h)
            self.step(data[pos:pos + seq_length], data[pos + 1:pos + seq_length + 1])
            pos += seq_length
        return pos
