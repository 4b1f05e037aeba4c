"""Where one overhead-bound torch train step goes, quadkeras (eager, fast forward) beside
plain PyTorch, phase by phase (the step `fit` runs: `quadkeras.training.fast_step`) (zero grad, forward, loss, backward, optimizer, metrics), ms,
median of N interleaved steps in one process (issue #26; docs/speed_log.md, "2026-12-05,
afternoon"). Diagnostic only: the ratios that count come from bench/step_overhead.py.

    KERAS_BACKEND=torch python bench/step_phases.py resnet20      # or resnet20_lsq, qresnet14 [N]
"""
import gc, os, statistics, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
import torch; torch.set_num_threads(1)
import keras
from train_step import keras_side, _data
from plain_torch import build_plain_net
from quadkeras.quantize import scheme_from_flags
name = sys.argv[1]; q = name.endswith("_lsq")
base = name[:-4] if q else name
N = int(sys.argv[2]) if len(sys.argv) > 2 else 60
x, y = _data(2, 8)
T = {}
def tick(k, t0):
    t = time.perf_counter(); T.setdefault(k, []).append(t - t0); return t
# keras
train, _ = keras_side(base, 2, "false", size=8, quantize=scheme_from_flags("lsq", 4, 4) if q else None)
train(x, y)
# the compiled model keras_side built (it returns only its step functions)
model = [o for o in gc.get_objects()
         if isinstance(o, keras.Model) and getattr(o, "optimizer", None) is not None and o.built][-1]
xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
from quadkeras.training import fast_step
walks = fast_step._walks(model)  # the fast train step's lists (what `fit` runs on torch)
def kstep():
    t = time.perf_counter()
    for p in walks.parameters:
        p.grad = None
    t = tick("k zero", t)
    y_pred = fast_step._predict(model, model, xt, walks); t = tick("k fwd", t)
    trainable = [v for v in walks.weights if v.trainable]
    loss = fast_step._total_loss(model, walks, trainable, yt, y_pred, None)
    model._loss_tracker.update_state(loss, sample_weight=2); t = tick("k loss", t)
    loss.backward(); t = tick("k bwd", t)
    with torch.no_grad():
        model.optimizer.apply([v._value.grad for v in trainable], trainable)
    t = tick("k opt", t)
    model.compute_metrics(xt, yt, y_pred, None); t = tick("k metrics", t)
# plain
torch.manual_seed(0)
net = build_plain_net(name)
if q:
    from plain_torch import initialize_lsq
    initialize_lsq(net, torch.rand(2, 3, 8, 8))
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
lf = torch.nn.CrossEntropyLoss()
xc = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(); yc = torch.from_numpy(y)
def pstep():
    t = time.perf_counter()
    net.train(); opt.zero_grad(set_to_none=True); t = tick("p zero", t)
    out = net(xc); t = tick("p fwd", t)
    loss = lf(out, yc); t = tick("p loss", t)
    loss.backward(); t = tick("p bwd", t)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5); opt.step(); t = tick("p opt", t)
for _ in range(5): kstep(); pstep()
T.clear()
for _ in range(N): kstep(); pstep()
tot = {"k": 0, "p": 0}
for k, v in T.items():
    m = statistics.median(v) * 1e3; tot[k[0]] += m
    print(f"{k:10s} {m:7.2f} ms")
print("total", {k: round(v, 2) for k, v in tot.items()}, "ratio", round(tot["p"] / tot["k"], 2))
