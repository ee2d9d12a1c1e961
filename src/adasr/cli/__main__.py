"""``python -m adasr.cli``: the ``adasr`` command (for launchers such as ``torchrun -m`` and
``accelerate launch -m``)."""

from adasr.cli import main

if __name__ == "__main__":
    main()
