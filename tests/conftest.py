import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any hub call fails at once: tests never download
