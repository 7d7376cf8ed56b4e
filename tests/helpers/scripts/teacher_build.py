"""`rdmldg build` for the kill tests' subprocesses: the same options and run as the command,
without importing the other subcommands (quicker to start)."""

import argparse
import sys

from rdmldg_hf.commands import build as build_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="rdmldg build")
    build_command.add_arguments(parser)
    sys.exit(build_command.run(parser.parse_args(sys.argv[1:])))
