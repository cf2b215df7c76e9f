"""Empty stand-in for torchvision.transforms (see __init__.py): attribute access fails."""


def __getattr__(name: str):
    raise AttributeError(f"torchvision.transforms.{name} is stubbed out in the benchmark harness")
