#!/bin/sh
# Add Mixtral Desk to the desktop's application menu for this user (no root needed):
# a launcher in ~/.local/bin, the menu entry and the icon. Run it from the unpacked folder:
#   ./install.sh            install (the folder stays where it is; move it first if you like)
#   ./install.sh --remove   take the menu entry, icon and launcher away again
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bin=$HOME/.local/bin
apps=$data/applications
icons=$data/icons/hicolor
if [ "${1:-}" = "--remove" ]; then
    rm -f "$bin/mixtral-desk" "$apps/mixtral-desk.desktop" \
          "$icons/256x256/apps/mixtral-desk.png" "$icons/scalable/apps/mixtral-desk.svg"
    echo "Mixtral Desk removed from the menu (your conversations and models are kept)."
    exit 0
fi
mkdir -p "$bin" "$apps" "$icons/256x256/apps" "$icons/scalable/apps"
ln -sf "$here/mixtral-desk" "$bin/mixtral-desk"
cp "$here/mixtral-desk.png" "$icons/256x256/apps/mixtral-desk.png"
cp "$here/mixtral-desk.svg" "$icons/scalable/apps/mixtral-desk.svg"
sed "s|^Exec=.*|Exec=\"$here/mixtral-desk\"|" "$here/mixtral-desk.desktop" > "$apps/mixtral-desk.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q "$icons" || true
echo "Mixtral Desk is in your application menu; 'mixtral-desk' works in a terminal too"
echo "(if ~/.local/bin is on your PATH)."
