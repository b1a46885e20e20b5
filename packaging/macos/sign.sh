#!/usr/bin/env bash
# Sign, notarise and package "Mixtral Desk.app" made by packaging/build.py on macOS.
#
#   IDENTITY="Developer ID Application: Your Name (TEAMID)" \
#   NOTARY_PROFILE=mixtral-desk-notary \
#   packaging/macos/sign.sh [dist]
#
# NOTARY_PROFILE is a keychain profile made once with
#   xcrun notarytool store-credentials mixtral-desk-notary --apple-id you@example.com \
#       --team-id TEAMID --password <app-specific password>
# Without NOTARY_PROFILE the app is signed and the .dmg made, but not notarised.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dist=${1:-$here/../../dist}
app="$dist/Mixtral Desk.app"
entitlements="$here/entitlements.plist"
: "${IDENTITY:?set IDENTITY to your Developer ID Application certificate name}"
version=$(/usr/libexec/PlistBuddy -c "Print CFBundleShortVersionString" "$app/Contents/Info.plist")
dmg="$dist/mixtral-desk-$version-macos-$(uname -m).dmg"

# 1. Sign every Mach-O inside the bundle from the inside out (dylibs, .so, Qt frameworks), then the
#    app itself: hardened runtime (--options runtime) and a secure timestamp are what notarisation
#    requires. --deep is not used: Apple discourages it, and it misses nothing here.
find "$app/Contents" -type f \( -name "*.dylib" -o -name "*.so" -o -perm -u+x \) -print0 |
    while IFS= read -r -d '' file; do
        if file -b "$file" | grep -q "Mach-O"; then
            codesign --force --timestamp --options runtime --entitlements "$entitlements" \
                --sign "$IDENTITY" "$file"
        fi
    done
find "$app/Contents" -type d -name "*.framework" -print0 |
    while IFS= read -r -d '' framework; do
        codesign --force --timestamp --options runtime --sign "$IDENTITY" "$framework"
    done
codesign --force --timestamp --options runtime --entitlements "$entitlements" \
    --sign "$IDENTITY" "$app"
codesign --verify --strict --verbose=2 "$app"

# 2. A compressed disk image with the app and a link to /Applications, signed as well.
staging=$(mktemp -d)
cp -R "$app" "$staging/"
ln -s /Applications "$staging/Applications"
rm -f "$dmg"
hdiutil create -volname "Mixtral Desk" -srcfolder "$staging" -fs HFS+ -format UDZO "$dmg"
rm -rf "$staging"
codesign --force --timestamp --sign "$IDENTITY" "$dmg"

# 3. Notarise and staple (so that Gatekeeper accepts it offline too).
if [ -n "${NOTARY_PROFILE:-}" ]; then
    xcrun notarytool submit "$dmg" --keychain-profile "$NOTARY_PROFILE" --wait
    xcrun stapler staple "$dmg"
    xcrun stapler staple "$app"
    spctl --assess --type execute --verbose "$app"
else
    echo "NOTARY_PROFILE is not set: signed but not notarised"
fi
echo "$dmg"
