"""The machine and process the workshop runs in: paths, device and dtype, the Hub, installed packages,
processes under a launcher, and the environment checklist. The lowest layer: imports nothing else of the package."""
