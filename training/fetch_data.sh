#!/usr/bin/env bash
# Installs the training image sources (Debian packages + PyPI packages) and
# writes the list of training image paths to training/data/images.txt.
# Licences of every source are recorded in training/DATA.md.
# Usage: bash training/fetch_data.sh        (needs root for apt-get)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="$HERE/data"
mkdir -p "$DATA/pypi"

# 1) Debian photographic wallpapers (Debian 12 "bookworm" versions used:
#    mate-backgrounds 1.26.0-1, lomiri-wallpapers-16.04/-20.04 20.04.0-2).
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
fi

# 2) Python tooling + PyPI packages that bundle CC0 / public-domain photos.
python3 -m pip install -q -r "$HERE/requirements.txt"

# 3) Collect the list. Only photographs are used (no abstract/vector art).
python3 - "$DATA" <<'PY'
import os, sys, cv2, numpy as np
data = sys.argv[1]
bg = "/usr/share/backgrounds"
debian = [
  # mate-backgrounds (GPL-2+)
  *[f"{bg}/mate/nature/{n}.jpg" for n in
    ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
     "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower"]],
  # lomiri-wallpapers-16.04 (CC-BY-4.0 / CC-BY-SA-4.0 / CC0-1.0, see DATA.md)
  *[f"{bg}/{n}.jpg" for n in
    ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
     "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
     "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich",
     "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
     "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
     "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi"]],
  # lomiri-wallpapers-20.04 (CC-BY-SA-3.0)
  f"{bg}/Kleiber_by_Lukas_Baubkus.jpg",
]
paths = []
for p in debian:
    if not os.path.exists(p):
        sys.exit(f"missing {p}")
    paths.append(p)

# scikit-image bundled images (no download needed; CC0 / public domain)
import skimage.data as sd
for name in ["astronaut", "camera", "chelsea", "coffee", "rocket", "coins",
             "brick", "grass", "gravel"]:
    im = getattr(sd, name)()
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    out = os.path.join(data, "pypi", f"skimage_{name}.png")
    cv2.imwrite(out, cv2.cvtColor(im[..., :3], cv2.COLOR_RGB2BGR))
    paths.append(out)
# matplotlib sample data: Grace Hopper portrait (US Navy photo, public domain)
import matplotlib, shutil
src = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
out = os.path.join(data, "pypi", "matplotlib_grace_hopper.jpg")
shutil.copyfile(src, out)
paths.append(out)

with open(os.path.join(data, "images.txt"), "w") as f:
    f.write("\n".join(paths) + "\n")
print(f"{len(paths)} training images listed in {data}/images.txt")
PY
