"""The `gradcore` command (also `python -m gradcore`): demo, info, bench, and the paths a
build script asks for (`--cmake-dir`, `--include`)."""

from __future__ import annotations

import argparse
import sys


def _info(_argv) -> int:
    import gradcore

    for key, value in gradcore.info().items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        print(f"{key:14} {value}")
    return 0


def _bench(argv) -> int:
    from gradcore.bench import main as bench_main

    return bench_main(argv)


def _demo(argv) -> int:
    from gradcore.demo import main as demo_main

    return demo_main(argv)


COMMANDS = {
    "demo": (_demo, "train a small RNN whose gradients explode, then the same with gradcore's "
                    "clipping: the problem and its cure (gradcore demo --help)"),
    "info": (_info, "print the version, the active SIMD target, threads and build facts"),
    "bench": (_bench, "run the micro-benchmarks side by side with NumPy and PyTorch "
                      "(gradcore bench --help)"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--cmake-dir"], ["--include"]):  # for build scripts: one path, nothing else
        from gradcore._embedding import get_cmake_dir, get_include

        print(get_cmake_dir() if argv[0] == "--cmake-dir" else get_include())
        return 0
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="gradcore")
        parser.add_argument("command", choices=sorted(COMMANDS),
                            help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
        parser.parse_args(argv[:1])
    command, rest = argv[0], argv[1:]
    return COMMANDS[command][0](rest)


if __name__ == "__main__":
    sys.exit(main())
