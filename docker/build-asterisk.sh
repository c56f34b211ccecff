#!/usr/bin/env bash
# Build a real Asterisk from Debian sid's source package into a cached prefix.
#
#   docker/build-asterisk.sh            # prints the install prefix as the last line on stdout
#
# The prefix is ${CALLGATE_ASTERISK_CACHE:-/var/cache/callgate/asterisk}/<upstream version>.
# When <prefix>/.complete exists the script prints the prefix and exits at once, so the test
# suite can call it every session. Everything else it says goes to stderr.
#
# Needs root for apt-get when packages are missing. Uses only Debian's package archive:
# the sid source index is fetched into a private apt state directory (the system's
# sources and lists are never touched). Works the same inside a Dockerfile (debian:bookworm).
#
# Environment:
#   CALLGATE_ASTERISK_CACHE    cache root (default /var/cache/callgate/asterisk)
#   CALLGATE_ASTERISK_JOBS     make -j (default 3)
#   CALLGATE_ASTERISK_REFRESH  seconds before the cached sid index is fetched again (default 86400)
#   CALLGATE_ASTERISK_KEEP_BUILD=1  keep the build tree (default: removed after success)
#   CALLGATE_ASTERISK_SRCPKG   source package name (default asterisk; for testing the error path)
set -euo pipefail

CACHE_ROOT="${CALLGATE_ASTERISK_CACHE:-/var/cache/callgate/asterisk}"
JOBS="${CALLGATE_ASTERISK_JOBS:-3}"
REFRESH_SECONDS="${CALLGATE_ASTERISK_REFRESH:-86400}"
APT_STATE="$CACHE_ROOT/.apt"
SRCPKG="${CALLGATE_ASTERISK_SRCPKG:-asterisk}"

# Build-time packages (bookworm) and run-time packages (sipp for the tests; the English
# prompts, so that Playback(ss-noservice) and sound:ss-noservice have a file to play).
BUILD_DEPS=(build-essential libjansson-dev libxml2-dev libsqlite3-dev uuid-dev libedit-dev
	libssl-dev libcurl4-openssl-dev libsrtp2-dev pkg-config xz-utils bzip2 patch)
RUN_DEPS=(sip-tester asterisk-core-sounds-en-wav)
SOUNDS_DIR=/usr/share/asterisk/sounds/en_US_f_Allison # from asterisk-core-sounds-en-wav

# Modules to build. Names are exact; a trailing * takes every module of that prefix that
# menuselect enables by default and marks support_level core. Module dependencies are added.
#   Core (no module needed): Answer, Hangup, Progress, Ringing, Busy, Congestion, Wait,
#   NoOp, Goto, GotoIf, GotoIfTime, Set, MSet, ExecIfTime, ImportVar, Local/ channels.
MODULES=(
	app_stasis app_dial app_playback app_echo app_verbose app_senddtmf app_userevent res_agi
	app_stack app_exec app_originate app_while app_milliwatt
	app_voicemail app_disa app_confbridge app_queue app_read
	'res_ari*' 'res_stasis*' res_http_websocket res_websocket_client
	chan_pjsip 'res_pjsip*' res_pjproject 'res_sorcery_*' res_rtp_asterisk res_srtp
	res_timing_timerfd res_clioriginate
	chan_bridge_media chan_rtp
	pbx_config cdr_csv cdr_manager
	func_callerid func_cdr func_channel func_logic func_strings func_timeout func_math
	func_global func_env func_db func_dialplan func_groupcount func_hangupcause func_uri
	func_base64 func_rand func_md5 func_sha1 func_cut func_sprintf func_module func_version
	func_devstate func_extstate func_lock func_pjsip_endpoint func_pjsip_aor
	func_pjsip_contact func_json func_uuid func_sysinfo func_config func_shell
	codec_ulaw codec_alaw codec_a_mu format_wav format_pcm format_sln
	bridge_simple bridge_native_rtp bridge_softmix bridge_holding bridge_builtin_features
)
# Must be present after the build, or the script fails.
REQUIRED=(app_stasis app_dial app_playback res_ari res_ari_channels res_stasis
	res_http_websocket chan_pjsip res_pjsip res_pjsip_session res_pjsip_registrar
	res_pjsip_endpoint_identifier_ip res_pjsip_endpoint_identifier_user res_pjproject
	res_rtp_asterisk pbx_config cdr_csv cdr_manager func_timeout func_cdr
	func_channel func_callerid codec_ulaw format_wav res_timing_timerfd bridge_simple
	app_voicemail app_disa app_confbridge app_queue res_agi)

log() { printf '[build-asterisk] %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

SUDO_OK=0
[[ $(id -u) -eq 0 ]] && SUDO_OK=1
APT_UPDATED=0

missing_packages() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
	done
}

apt_install() {
	local missing
	mapfile -t missing < <(missing_packages "$@")
	((${#missing[@]} == 0)) && return 0
	((SUDO_OK)) || die "missing packages (run as root, or apt-get install them): ${missing[*]}"
	if ((!APT_UPDATED)); then
		log "apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
}

# The Debian mirror the system already uses (deb822 or one-line format).
debian_mirror() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
		[[ -n $uri ]] && {
			echo "$uri"
			return
		}
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		uri=$(awk '$1 ~ /^deb(-src)?$/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/ && $i !~ /security/) {print $i; exit}}' "$f")
		[[ -n $uri ]] && {
			echo "$uri"
			return
		}
	done
	echo "http://deb.debian.org/debian"
}

APT_OPTS=()
apt_private_setup() {
	mkdir -p "$APT_STATE/lists/partial" "$APT_STATE/cache/archives/partial"
	printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' \
		"$(debian_mirror)" >"$APT_STATE/sid.list"
	APT_OPTS=(-o "Dir::Etc::sourcelist=$APT_STATE/sid.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::lists=$APT_STATE/lists" -o "Dir::Cache=$APT_STATE/cache"
		-o "Acquire::Languages=none")
	((SUDO_OK)) && APT_OPTS+=(-o "APT::Sandbox::User=root")
	return 0
}

# Refresh the private sid index when it is older than REFRESH_SECONDS. Returns non-zero
# only when there is no index at all.
sid_index_refresh() {
	local stamp="$APT_STATE/updated" now age
	now=$(date +%s)
	if [[ -f $stamp ]]; then
		age=$((now - $(stat -c %Y "$stamp")))
		((age < REFRESH_SECONDS)) && return 0
	fi
	log "fetching the sid source index ($(debian_mirror))"
	if apt-get "${APT_OPTS[@]}" update -qq >&2; then
		touch "$stamp"
		return 0
	fi
	[[ -f $stamp ]] && {
		log "WARNING: sid index refresh failed; using the one from $(date -d @"$(stat -c %Y "$stamp")")"
		return 0
	}
	return 1
}

# Newest asterisk source version in the private sid index (full Debian version).
sid_version() {
	local v best=""
	while read -r v; do
		if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
	done < <(apt-cache "${APT_OPTS[@]}" showsrc "$SRCPKG" 2>/dev/null |
		awk -v want="$SRCPKG" '/^Package: / {p = $2} /^Version: / && p == want {print $2}')
	echo "$best"
}

newest_complete_prefix() {
	local d best=""
	for d in "$CACHE_ROOT"/*/; do
		[[ -f ${d}.complete ]] || continue
		d=${d%/}
		if [[ -z $best ]] || dpkg --compare-versions "${d##*/}" gt "${best##*/}"; then best=$d; fi
	done
	echo "$best"
}

now_s() { date +%s.%N; }
TIMINGS=()
phase_start() {
	PHASE_NAME=$1
	PHASE_T0=$(now_s)
	log "phase $PHASE_NAME ..."
}
phase_end() {
	local dt
	dt=$(awk -v a="$PHASE_T0" -v b="$(now_s)" 'BEGIN {printf "%.1f", b - a}')
	TIMINGS+=("$PHASE_NAME ${dt}s")
	log "phase $PHASE_NAME done in ${dt}s"
}

# Run a command with its output in a log file; on failure show the tail and stop.
logged() {
	local logfile=$1
	shift
	if ! "$@" >"$logfile" 2>&1; then
		tail -n 60 "$logfile" >&2
		die "'$*' failed (full log: $logfile)"
	fi
}

# ---------------------------------------------------------------------------------------
# menuselect: expand MODULES, add module dependencies, write menuselect.makeopts.
# ---------------------------------------------------------------------------------------
select_modules() {
	local tree=menuselect-tree ms=menuselect/menuselect
	local -A known=() core=() deps=() selected=()
	local kind a b m pat changed cat
	while read -r kind a b; do
		case $kind in
		member) known[$a]=1 ;;
		core) core[$a]=1 ;;
		dep) deps[$a]+="$b " ;;
		esac
	done < <(awk '
		/<member name="/ { match($0, /name="[^"]+"/); m = substr($0, RSTART + 6, RLENGTH - 7); print "member", m }
		/<\/member>/ { m = "" }
		m != "" && /<support_level>core</ { print "core", m }
		m != "" && /<depend/ { d = $0; sub(/.*<depend[^>]*>/, "", d); sub(/<\/depend>.*/, "", d); print "dep", m, d }
	' "$tree")

	# (--list-options cuts names at 30 characters; --list-category does not.)
	local -A default_on=()
	for cat in $($ms --category-list menuselect.makeopts); do
		while read -r a b; do
			[[ $a == "+" ]] && default_on[$b]=1
		done < <($ms --list-category "$cat" menuselect.makeopts 2>/dev/null)
	done

	for pat in "${MODULES[@]}"; do
		if [[ $pat == *'*' ]]; then
			for m in "${!known[@]}"; do
				# shellcheck disable=SC2053
				[[ $m == $pat && -n ${default_on[$m]:-} && -n ${core[$m]:-} ]] && selected[$m]=1
			done
		else
			[[ -n ${known[$pat]:-} ]] || die "menuselect knows no module $pat"
			selected[$pat]=1
		fi
	done
	changed=1
	while ((changed)); do
		changed=0
		for m in "${!selected[@]}"; do
			for a in ${deps[$m]:-}; do
				if [[ -n ${known[$a]:-} && -z ${selected[$a]:-} ]]; then
					selected[$a]=1
					changed=1
					log "  $a (needed by $m)"
				fi
			done
		done
	done

	local args=()
	for cat in $($ms --category-list menuselect.makeopts); do
		case $cat in
		MENUSELECT_CFLAGS | MENUSELECT_CHANNELSTORAGE) ;; # compiler flags and core options
		*) args+=(--disable-category "$cat") ;;
		esac
	done
	# Portable binaries (the prefix may be copied into an image); no sounds downloads.
	args+=(--disable BUILD_NATIVE)
	for m in "${!selected[@]}"; do args+=(--enable "$m"); done
	$ms "${args[@]}" menuselect.makeopts >/dev/null
	$ms --check-deps menuselect.makeopts >/dev/null
	printf '%s\n' "${!selected[@]}" | sort >selected-modules.txt
	log "selected $(wc -l <selected-modules.txt) modules"
}

# ---------------------------------------------------------------------------------------
main() {
	command -v dpkg-query >/dev/null || die "this script needs a Debian system (dpkg/apt)"
	mkdir -p "$CACHE_ROOT"
	exec 9>"$CACHE_ROOT/.lock"
	flock 9 # one build at a time; others wait, then find .complete

	local t_all
	t_all=$(now_s)
	apt_install "${RUN_DEPS[@]}"
	apt_private_setup

	local full_version="" version prefix
	if sid_index_refresh; then full_version=$(sid_version); fi
	if [[ -z $full_version ]]; then
		prefix=$(newest_complete_prefix)
		if [[ -n $prefix ]]; then
			log "WARNING: cannot read sid's asterisk version; using the cached build $prefix"
			echo "$prefix"
			return 0
		fi
		die "Debian sid has no '$SRCPKG' source package (or its index could not be fetched from $(debian_mirror)); nothing to build"
	fi
	version=${full_version#*:}   # drop the epoch
	version=${version%-*}        # drop the Debian revision
	version=${version%%+*}       # drop +dfsg+~cs...: the upstream Asterisk version
	[[ $version =~ ^[0-9][0-9A-Za-z.~_-]*$ ]] || die "unexpected asterisk version '$full_version'"
	prefix="$CACHE_ROOT/$version"
	# A build of another module list is rebuilt: the stamp names the lists it was built from.
	local modset
	modset=$(printf '%s\n' "${MODULES[@]}" -- "${REQUIRED[@]}" | sha256sum | cut -c1-16)
	if [[ -f $prefix/.complete ]] && grep -qx "modules=$modset" "$prefix/.complete"; then
		echo "$prefix"
		return 0
	fi

	log "building asterisk $full_version (sid) into $prefix"
	local build="$CACHE_ROOT/.build/$version"
	rm -rf "$build" "$prefix"
	mkdir -p "$build/src" "$build/externals" "$build/logs"

	phase_start deps
	apt_install "${BUILD_DEPS[@]}"
	phase_end

	phase_start fetch
	(cd "$build/src" && apt-get "${APT_OPTS[@]}" source --download-only -qq "$SRCPKG=$full_version" >&2) ||
		die "apt-get source $SRCPKG=$full_version failed"
	local origs=("$build/src/${SRCPKG}"_*.orig.tar.xz) pjorigs=("$build/src/${SRCPKG}"_*.orig-Xpjproject.tar.xz)
	local orig=${origs[0]} pjorig=${pjorigs[0]}
	[[ -f $orig ]] || die "the sid source package has no ${SRCPKG}_*.orig.tar.xz"
	[[ -f $pjorig ]] || die "the sid source package has no ${SRCPKG}_*.orig-Xpjproject.tar.xz (bundled pjproject)"
	tar -C "$build" -xJf "$orig"
	local srcdir
	srcdir=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'asterisk-*' | head -n1)
	[[ -n $srcdir && -f $srcdir/third-party/versions.mak ]] || die "unexpected layout in $orig"
	phase_end

	phase_start pjproject-repack
	local pjver
	pjver=$(sed -n 's/^PJPROJECT_VERSION=//p' "$srcdir/third-party/versions.mak")
	[[ -n $pjver ]] || die "no PJPROJECT_VERSION in third-party/versions.mak"
	mkdir -p "$build/pj"
	tar -C "$build/pj" -xJf "$pjorig"
	local pjtop
	pjtop=$(find "$build/pj" -mindepth 1 -maxdepth 1 -type d | head -n1)
	mv "$pjtop" "$build/pj/pjproject-$pjver"
	# Debian removed the non-free bdimad_dev.c; the Makefile still lists its object.
	sed -i 's/ bdimad_dev\.o//' "$build/pj/pjproject-$pjver/pjmedia/build/Makefile"
	tar -C "$build/pj" -cf - "pjproject-$pjver" | bzip2 --fast >"$build/externals/pjproject-$pjver.tar.bz2"
	(cd "$build/externals" && md5sum "pjproject-$pjver.tar.bz2") \
		>"$srcdir/third-party/pjproject/pjproject-$pjver.tar.bz2.md5"
	rm -rf "$build/pj"
	phase_end

	cd "$srcdir"
	phase_start configure
	logged "$build/logs/configure.log" ./configure --prefix="$prefix" --with-pjproject-bundled \
		--with-externals-cache="$build/externals" --with-jansson-bundled=no \
		--without-sdl --without-pwlib --disable-xmldoc
	phase_end

	phase_start menuselect
	logged "$build/logs/menuselect.log" make menuselect.makeopts
	select_modules
	phase_end

	phase_start make-pjproject
	logged "$build/logs/make-pjproject.log" make -j"$JOBS" third-party
	phase_end

	phase_start make-asterisk
	logged "$build/logs/make.log" make -j"$JOBS"
	phase_end

	phase_start install
	logged "$build/logs/install.log" make install
	local m missing=()
	for m in "${REQUIRED[@]}"; do
		[[ -f $prefix/lib/asterisk/modules/$m.so ]] || missing+=("$m")
	done
	((${#missing[@]} == 0)) || die "modules missing after the build: ${missing[*]}"
	mkdir -p "$prefix/var/lib/asterisk/sounds"
	[[ -d $SOUNDS_DIR ]] && ln -sfn "$SOUNDS_DIR" "$prefix/var/lib/asterisk/sounds/en"
	cp selected-modules.txt "$prefix/selected-modules.txt"
	phase_end

	TIMINGS+=("total $(awk -v a="$t_all" -v b="$(now_s)" 'BEGIN {printf "%.1f", b - a}')s")
	{
		echo "debian_version=$full_version"
		echo "pjproject=$pjver"
		echo "modules=$modset"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		printf 'timing %s\n' "${TIMINGS[@]}"
	} >"$prefix/.complete.tmp"
	mv "$prefix/.complete.tmp" "$prefix/.complete"
	cd /
	[[ ${CALLGATE_ASTERISK_KEEP_BUILD:-0} == 1 ]] || rm -rf "$build"
	log "timings: ${TIMINGS[*]}"
	log "installed $(du -sh "$prefix" | cut -f1) into $prefix"
	echo "$prefix"
}

main "$@"
