import os

import torch

# Float results on CPU depend on the thread count; fix it so runs reproduce.
torch.set_num_threads(int(os.environ.get("DIFFUSION_TEST_THREADS", "2")))

pytest_plugins = ["pytester"]  # tests of the book's pytest set-up run pytest in a temporary dir
