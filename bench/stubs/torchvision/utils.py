"""Empty stand-in for torchvision.utils (see __init__.py): attribute access fails."""


def __getattr__(name: str):
    raise AttributeError(f"torchvision.utils.{name} is stubbed out in the benchmark harness")
