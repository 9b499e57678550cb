#!/usr/bin/env bash
# Optional, slow: a real Asterisk 22 for the telephony test tests/telephony/test_asterisk.py (marker `slow`).
#
# Debian bookworm has no Asterisk package; Debian sid has Asterisk 22. This script builds a sid chroot with
# debootstrap (from Debian's own mirror), installs asterisk in it, and writes a configuration that binds
# to loopback only. Asterisk runs inside the chroot but shares the host's network namespace, so voxgate on
# the host reaches it on 127.0.0.1.
#
#   scripts/telephony-asterisk.sh build          # once: debootstrap + apt-get install asterisk (~10 min)
#   scripts/telephony-asterisk.sh configure PORT USER PASSWORD RECORDING
#                                                 # PJSIP on udp:127.0.0.1:PORT, an endpoint USER/PASSWORD that
#                                                 # voxgate registers as; RECORDING (8 kHz WAV) is what is played
#   scripts/telephony-asterisk.sh start | stop    # asterisk in the foreground of a background job / stopped
#   scripts/telephony-asterisk.sh call           # Asterisk originates a call to voxgate that plays RECORDING
#
# Needs root (chroot, mounts). The chroot lives in $VOXGATE_ASTERISK_ROOT (default /var/tmp/voxgate-sid).
set -euo pipefail
ROOT=${VOXGATE_ASTERISK_ROOT:-/var/tmp/voxgate-sid}
MIRROR=${VOXGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi

in_root() { "${SUDO[@]}" chroot "$ROOT" "$@"; }

mount_all() {
  mountpoint -q "$ROOT/proc" || "${SUDO[@]}" mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || "${SUDO[@]}" mount --bind /dev "$ROOT/dev"
}

build() {
  if [ -x "$ROOT/usr/sbin/asterisk" ]; then echo "asterisk: $ROOT already built"; return; fi
  command -v debootstrap >/dev/null || { "${SUDO[@]}" apt-get update -qq; "${SUDO[@]}" apt-get install -y -qq debootstrap >/dev/null; }
  [ -d "$ROOT/usr" ] || "${SUDO[@]}" debootstrap --variant=minbase sid "$ROOT" "$MIRROR"
  mount_all
  # a sid mirror snapshot may be older than its Release file's Valid-Until allows: accept it
  in_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false update -qq
  # asterisk's maintainer scripts try to start the service: forbid that inside the chroot
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$ROOT/usr/sbin/policy-rc.d" >/dev/null
  "${SUDO[@]}" chmod +x "$ROOT/usr/sbin/policy-rc.d"
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    asterisk asterisk-modules asterisk-core-sounds-en-gsm >/dev/null
  in_root asterisk -V
}

configure() {
  local port=$1 user=$2 password=$3 recording=$4
  local etc="$ROOT/etc/asterisk"
  "${SUDO[@]}" mkdir -p "$ROOT/var/lib/asterisk/sounds/voxgate"
  "${SUDO[@]}" cp "$recording" "$ROOT/var/lib/asterisk/sounds/voxgate/recording.wav"
  "${SUDO[@]}" tee "$etc/pjsip.conf" >/dev/null <<CONF
[global]
type=global
user_agent=Asterisk PBX (voxgate test)

[transport-udp]
type=transport
protocol=udp
bind=127.0.0.1:$port

[$user]
type=endpoint
transport=transport-udp
context=voxgate
disallow=all
allow=ulaw,alaw
auth=$user-auth
aors=$user
direct_media=no
rtp_symmetric=yes

[$user-auth]
type=auth
auth_type=userpass
username=$user
password=$password

[$user]
type=aor
max_contacts=1
remove_existing=yes
CONF
  "${SUDO[@]}" tee "$etc/extensions.conf" >/dev/null <<CONF
[general]
static=yes
writeprotect=yes

[voxgate]
exten => play,1,Answer()
 same => n,Wait(0.5)
 same => n,Playback(/var/lib/asterisk/sounds/voxgate/recording)
 same => n,Wait(0.5)
 same => n,Hangup()
CONF
  "${SUDO[@]}" tee "$etc/modules.conf" >/dev/null <<'CONF'
[modules]
autoload=yes
noload => chan_sip.so
noload => res_hep.so
noload => res_hep_pjsip.so
noload => res_hep_rtcp.so
noload => cdr_radius.so
noload => cel_radius.so
noload => res_phoneprov.so
noload => res_pjsip_phoneprov_provider.so
noload => res_statsd.so
noload => res_xmpp.so
noload => chan_iax2.so
noload => chan_dahdi.so
noload => res_http_websocket.so
noload => res_ari.so
CONF
  "${SUDO[@]}" tee "$etc/rtp.conf" >/dev/null <<'CONF'
[general]
rtpstart=31000
rtpend=31999
CONF
  "${SUDO[@]}" tee "$etc/asterisk.conf" >/dev/null <<'CONF'
[directories]
astetcdir => /etc/asterisk
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => /var/lib/asterisk
astdbdir => /var/lib/asterisk
astkeydir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => /var/spool/asterisk
astrundir => /var/run/asterisk
astlogdir => /var/log/asterisk
[options]
runuser => asterisk
rungroup => asterisk
CONF
  # the manager, HTTP and other network listeners stay off; only PJSIP on loopback listens
  printf '[general]\nenabled=no\n' | "${SUDO[@]}" tee "$etc/manager.conf" "$etc/http.conf" >/dev/null
  "${SUDO[@]}" mkdir -p "$ROOT/var/run/asterisk" "$ROOT/var/log/asterisk" "$ROOT/var/spool/asterisk"
  in_root chown -R asterisk:asterisk /var/run/asterisk /var/log/asterisk /var/spool/asterisk /var/lib/asterisk
}

case "${1:-}" in
  build) build ;;
  configure) shift; configure "$@" ;;
  start) mount_all; exec "${SUDO[@]}" chroot "$ROOT" asterisk -f -q -n ;;
  rx) shift; in_root asterisk -rx "$*" ;;
  call) in_root asterisk -rx "channel originate PJSIP/${2:-voxgate} extension play@voxgate" ;;
  stop) in_root asterisk -rx "core stop now" || true ;;
  umount) for m in dev proc; do mountpoint -q "$ROOT/$m" && "${SUDO[@]}" umount "$ROOT/$m"; done ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
