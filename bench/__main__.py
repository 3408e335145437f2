"""``python -m bench``: run the benchmark harness."""

from bench.run import main

if __name__ == "__main__":
    main()
