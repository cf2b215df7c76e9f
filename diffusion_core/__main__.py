"""`python -m diffusion_core train | sample | nll`: see `cli.py`."""

from .cli import main

raise SystemExit(main())
