#!/usr/bin/env bash
# Debian's fonts and wallpapers for the synthetic training data (upocr_hf.data.resources finds them on disk), and
# matplotlib for the training report. Never installs the families reserved for independent evaluations
# (fonts-urw-base35 and its derivatives, fonts-liberation*, ukui/lomiri wallpapers); the generator ignores them
# wherever they are installed. Usage: scripts/install_training_resources.sh [VERSIONS_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(
    # fonts: serif, sans, mono, display, handwriting, condensed
    fonts-roboto fonts-open-sans fonts-lato fonts-crosextra-carlito fonts-crosextra-caladea fonts-ebgaramond
    fonts-linuxlibertine fonts-freefont-ttf fonts-cantarell fonts-comic-neue fonts-firacode fonts-hack
    fonts-inconsolata fonts-cabin fonts-lobstertwo fonts-breip fonts-sil-gentium fonts-sil-andika fonts-sil-charis
    fonts-jura fonts-junicode fonts-kristi fonts-humor-sans fonts-oldstandard fonts-yanone-kaffeesatz
    fonts-adf-accanthis fonts-adf-gillius fonts-adf-universalis fonts-adf-verana fonts-adf-berenis
    fonts-adf-baskervald fonts-noto-core fonts-noto-mono fonts-cmu fonts-quicksand fonts-oxygen fonts-league-mono
    fonts-dancingscript fonts-sil-gentiumplus fonts-anonymous-pro fonts-mononoki fonts-goudybookletter
    fonts-isabella fonts-blankenburg fonts-rufscript fonts-tuffy fonts-averia-gwf fonts-averia-sans-gwf
    fonts-averia-serif-gwf fonts-femkeklaver fonts-fanwood fonts-prociono fonts-radisnoir fonts-engadget
    # photographs and artwork
    gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers sway-backgrounds debian-edu-artwork
)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the [train] extra: matplotlib, scikit-image and CRAFT's weights (the test extra has the first two, not the third)
.venv/bin/python -c "import matplotlib, skimage, easyocr_en_models" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[train]"
if [ -n "${1:-}" ]; then
    mkdir -p "$(dirname "$1")"
    dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" > "$1"
fi
