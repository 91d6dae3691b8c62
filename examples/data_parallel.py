"""Data-parallel training on the CPU with gradient clipping by ``gradcore.distributed``.

    python examples/data_parallel.py                # 2 processes, DDP (replicated gradients)
    python examples/data_parallel.py --sharded      # ZeRO-style: each rank owns a gradient slice
    python examples/data_parallel.py --world-size 4 --steps 200

The processes talk over loopback with torch.distributed's gloo backend. Each rank trains
on its own slice of a synthetic regression set.

- Replicated (default): DistributedDataParallel averages the gradients during backward,
  so every rank holds the same gradients; ``sharded=False`` clips them with no further
  communication, exactly as one process would.
- Sharded: the gradients are reduce-scattered, so each rank holds only its slice of the
  averaged (flat) gradient and updates only its slice of the parameters (ZeRO stage 2).
  ``sharded=True`` exchanges one norm per rank so every rank clips by the same global norm.
"""

import argparse
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import gradcore.distributed as gcd


def make_data(rank, world_size, n=1024):
    """This rank's slice of one synthetic data set (the same seed on every rank)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    y = torch.sin(x @ torch.randn(16, 1, generator=g)) + 0.1 * torch.randn(n, 1, generator=g)
    return x[rank::world_size], y[rank::world_size]


def train(rank, world_size, port, args):
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    world = dist.group.WORLD
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    params = list(model.parameters())
    x, y = make_data(rank, world_size)

    if args.sharded:
        numel = sum(p.numel() for p in params)
        shard = -(-numel // world_size)  # padded with zeros, which add nothing to the norm
    else:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(params, lr=args.lr)

    totals = []
    for step in range(1, args.steps + 1):
        model.zero_grad()
        loss = torch.nn.functional.mse_loss((model if args.sharded else ddp)(x), y)
        loss.backward()

        if not args.sharded:
            # DDP has already averaged the gradients: they are the same on every rank.
            grads = [p.grad for p in params]
            total = gcd.clip_by_global_norm_(grads, args.max_norm, comm=world, sharded=False)
            optimizer.step()
        else:
            flat = torch.zeros(shard * world_size)
            flat[:numel] = torch.cat([p.grad.reshape(-1) for p in params])
            my_grad = torch.empty(shard)
            dist.reduce_scatter(my_grad, list(flat.chunk(world_size)))  # sums my slice
            my_grad /= world_size
            # Only this rank's slice: one number per rank is exchanged for the global norm.
            total = gcd.clip_by_global_norm_([my_grad], args.max_norm, comm=world)
            with torch.no_grad():
                flat_params = torch.zeros(shard * world_size)
                flat_params[:numel] = parameters_to_vector(params)
                mine = flat_params[rank * shard:(rank + 1) * shard] - args.lr * my_grad
                slices = [torch.empty(shard) for _ in range(world_size)]
                dist.all_gather(slices, mine)
                vector_to_parameters(torch.cat(slices)[:numel], params)

        totals.append(total)
        if rank == 0 and (step % max(1, args.steps // 10) == 0 or step == 1):
            clipped = "clipped" if total > args.max_norm else ""
            print(f"step {step:4d}  loss {loss.item():.4f}  grad norm {total:.4f} {clipped}")

    # Every rank clipped by the same total in every step (bit for bit), so the replicas
    # (or the slices) stay consistent.
    everyone = [torch.empty(len(totals), dtype=torch.float64) for _ in range(world_size)]
    dist.all_gather(everyone, torch.tensor(totals, dtype=torch.float64))
    if rank == 0:
        same = all(torch.equal(t, everyone[0]) for t in everyone)
        print(f"same total on every rank in every step: {'yes' if same else 'NO'}")
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--max-norm", type=float, default=0.5)
    parser.add_argument("--sharded", action="store_true",
                        help="ZeRO-style sharded gradients instead of DDP")
    args = parser.parse_args()
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(train, args=(args.world_size, port, args), nprocs=args.world_size)


if __name__ == "__main__":
    main()
