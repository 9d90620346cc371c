# bench/torch_step_profile.py — per-kernel device time of PyTorch's compiled Llama 110M training
# step (the reference of bench/pytorch/, bf16 autocast, fused AdamW), to set beside `smedjan bench`'s
# per-op profile. usage (from the repo root, bench/pytorch/ copied in): [T=1024] [B=32] [SHAPES=1] python3 bench/torch_step_profile.py
# SHAPES=1 also prints the products (aten::mm, aten::addmm) by input shape, to set beside smedjan's
# SMJ_CUDA_PROFILE_SHAPES=1 rows (theirs [M,K],[K,N] are smedjan's M x N x K).
import sys, os, torch
sys.path.insert(0, "bench/pytorch")
from models import Llama
from torch.profiler import profile, ProfilerActivity
torch.backends.cuda.matmul.allow_tf32 = True
T, B = int(os.environ.get("T", 1024)), int(os.environ.get("B", 32))
SHAPES = os.environ.get("SHAPES") == "1"
model = Llama(maxT=T).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=6e-4, fused=True)
fwd = torch.compile(model, dynamic=False)
d = torch.randint(0, model.cfg["vocab"], (B, T + 1), device="cuda")
x, y = d[:, :-1].contiguous(), d[:, 1:].contiguous()
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fwd(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(6): step()
torch.cuda.synchronize()
acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if SHAPES else [])
with profile(activities=acts, record_shapes=SHAPES) as p:
    for _ in range(2): step()
    torch.cuda.synchronize()
# (with CPU events recorded, the ops above the kernels carry their time too: kernels alone then)
ev = [e for e in p.key_averages() if e.device_type.name == "CUDA" or (not SHAPES and getattr(e, "self_device_time_total", 0) > 0)]
tot = sum(getattr(e, "self_device_time_total", 0) for e in ev) / 2 / 1000
print(f"total device time per step {tot:.2f} ms")
ev.sort(key=lambda e: -getattr(e, "self_device_time_total", 0))
for e in ev[:40]:
    t = getattr(e, "self_device_time_total", 0) / 2 / 1000
    print(f"{t:8.3f} ms {e.count // 2:5d}x  {e.key[:150]}")
if SHAPES:
    dt = lambda e: getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
    mm = [e for e in p.key_averages(group_by_input_shape=True) if e.key in ("aten::mm", "aten::addmm")]
    mm.sort(key=lambda e: -dt(e))
    print(f"products by shape: {sum(dt(e) for e in mm) / 2 / 1000:.2f} ms a step")
    for e in mm:
        print(f"{dt(e) / 2 / 1000:8.3f} ms {e.count // 2:5d}x  {e.key} {e.input_shapes}")
