# shellcheck shell=bash
# Shared by hack/kernels/run and hack/kernels/matrix: fetches Debian's kernel
# packages into a cache of their own, builds the guest's payload (a static
# ctguard and the compiled kernel-test binaries) and its initramfs, and boots
# it under QEMU (TCG: nested KVM fails on the machines this runs on).

KERNELS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$KERNELS_DIR/../.." && pwd)"
CACHE_DIR="${CTGUARD_KERNELS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ctguard-kernels}"
MIRROR="${CTGUARD_KERNELS_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${CTGUARD_KERNELS_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Modules loaded before the command runs. Everything else the kernel asks
# for loads on demand through kmod's modprobe (nft expressions, conntrack
# helpers, netlink families). Names a kernel lacks are skipped and listed on
# the console log.
PRELOAD_MODULES=(
	nf_conntrack nf_conntrack_netlink nf_nat nf_tables nft_ct nft_nat nft_masq nft_chain_nat
	nft_counter nft_objref nft_reject_inet nft_fib_inet nft_limit nft_log nft_compat nft_queue
	nfnetlink_queue nfnetlink_log xt_NFQUEUE xt_conntrack nf_log_syslog nf_log_ipv4 nf_log_ipv6
	veth xfrm_user ipv6
)

# The guest's conntrack table size (hash buckets and nf_conntrack_max).
CONNTRACK_MAX=262144

# Module directories (under kernel/) whose modules the initramfs carries,
# with their dependencies.
MODULE_DIRS=(net/netfilter net/ipv4 net/ipv6 net/xfrm net/key net/core net/sched drivers/net/veth.ko)

# Host programs the guest gets, with their shared libraries: the tests
# cross-check with nft, conntrack and ip, call sysctl and setpriv, and the
# lab downloads with GNU wget.
HOST_PROGRAMS=(ip nft conntrack wget setpriv sysctl kmod)

# Debian packages this needs on the host.
HOST_PACKAGES=(qemu-system-x86:qemu-system-x86_64 cpio:cpio kmod:depmod xz-utils:xz
	nftables:nft conntrack:conntrack wget:wget iproute2:ip procps:sysctl util-linux:setpriv
	debian-archive-keyring:"$KEYRING")

die() {
	echo "hack/kernels: $*" >&2
	exit 2
}

log() {
	[ -n "${CTGUARD_KERNELS_QUIET:-}" ] || echo "hack/kernels: $*" >&2
}

# need_host_packages installs the Debian packages that are missing (as root),
# or names them.
need_host_packages() {
	local need=() p
	for p in "${HOST_PACKAGES[@]}"; do
		case "${p##*:}" in
		/*) [ -e "${p##*:}" ] || need+=("${p%%:*}") ;;
		*) command -v "${p##*:}" >/dev/null 2>&1 || [ -x "/usr/sbin/${p##*:}" ] || [ -x "/sbin/${p##*:}" ] || need+=("${p%%:*}") ;;
		esac
	done
	# The guest needs a static busybox (the busybox package's is dynamic).
	if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
		need+=(busybox-static)
	fi
	[ "${#need[@]}" -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		die "missing Debian packages; run: apt-get install ${need[*]}"
	fi
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

# kernel_source VERSION prints "SUITE METAPACKAGE": the Debian suite and
# the meta-package that follows the newest build of that kernel line.
kernel_source() {
	case "$1" in
	5.10) echo "bullseye linux-image-cloud-amd64" ;;
	6.1) echo "bookworm linux-image-cloud-amd64" ;;
	6.12) echo "bookworm linux-image-6.12-cloud-amd64" ;;
	*) die "unknown kernel version '$1' (known: 5.10, 6.1, 6.12)" ;;
	esac
}

# apt_opts SUITE sets APT_OPTS: options that point apt-get and apt-cache at
# a sources list and package lists of this cache's own, so the host's apt
# sources, lists and what it installs by default stay as they are.
apt_opts() {
	local root="$CACHE_DIR/apt/$1"
	APT_OPTS=(-o "Dir::Etc::SourceList=$root/sources.list" -o "Dir::Etc::SourceParts=$root/sources.list.d"
		-o "Dir::State::Lists=$root/lists" -o "Dir::Cache=$root/cache" -o "Dir::State::status=$root/status"
		-o "APT::Sandbox::User=root" -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false")
}

# apt_update SUITE writes the suite's private sources list (main, updates,
# security) and fetches its package lists.
apt_update() {
	local suite=$1 root="$CACHE_DIR/apt/$1"
	mkdir -p "$root/lists/partial" "$root/cache/archives/partial" "$root/sources.list.d"
	: >"$root/status"
	cat >"$root/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $suite main
deb [signed-by=$KEYRING] $MIRROR $suite-updates main
deb [signed-by=$KEYRING] $SECURITY_MIRROR $suite-security main
EOF
	apt_opts "$suite"
	log "apt-get update ($suite, private lists under $root)"
	apt-get "${APT_OPTS[@]}" update -qq >&2 || die "apt-get update for $suite failed"
	touch "$root/updated"
}

# fetch_kernel VERSION sets KDIR to the cached, unpacked kernel: vmlinuz,
# release, package, and modules/ (a module tree with modules.dep for the
# initramfs). The package lists are refreshed once a day.
fetch_kernel() {
	local version=$1 suite meta pkg pkgver deb kdir stamp
	read -r suite meta <<<"$(kernel_source "$version")"
	stamp="$CACHE_DIR/apt/$suite/updated"
	if [ -n "${CTGUARD_KERNELS_OFFLINE:-}" ] && [ -e "$CACHE_DIR/current-$version" ]; then
		KDIR="$(readlink -f "$CACHE_DIR/current-$version")"
		return 0
	fi
	if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
		apt_update "$suite"
	fi
	apt_opts "$suite"
	pkg="$(apt-cache "${APT_OPTS[@]}" depends "$meta" 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)"
	[ -n "$pkg" ] || die "no kernel package behind $meta in $suite"
	pkgver="$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | sed -n 's/^ *Candidate: //p')"
	case "$pkgver" in
	"$version".*) ;;
	*) die "$pkg is $pkgver, not Linux $version" ;;
	esac
	kdir="$CACHE_DIR/kernels/${pkg}_$pkgver"
	if [ ! -e "$kdir/release" ]; then
		mkdir -p "$CACHE_DIR/debs"
		deb="$(ls "$CACHE_DIR/debs/${pkg}_${pkgver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)"
		if [ -z "$deb" ]; then
			log "downloading $pkg $pkgver"
			(cd "$CACHE_DIR/debs" && apt-get "${APT_OPTS[@]}" download -qq "$pkg=$pkgver" >&2) ||
				die "apt-get download $pkg=$pkgver failed"
			deb="$(ls "$CACHE_DIR/debs/${pkg}_"*.deb | head -n1)"
		fi
		unpack_kernel "$deb" "$kdir.tmp" "$pkg" "$pkgver"
		rm -rf "$kdir"
		mv "$kdir.tmp" "$kdir"
	fi
	ln -sfn "$kdir" "$CACHE_DIR/current-$version"
	KDIR="$kdir"
}

# unpack_kernel DEB DIR PKG VERSION extracts the kernel and the modules the
# guest may need (with their dependencies, decompressed), and runs depmod.
unpack_kernel() {
	local deb=$1 dir=$2 pkg=$3 pkgver=$4 x rel mods m
	rm -rf "$dir"
	x="$dir/deb"
	mkdir -p "$x"
	dpkg-deb -x "$deb" "$x"
	rel="$(basename "$(ls -d "$x"/lib/modules/*/ | head -n1)")"
	[ -n "$rel" ] && [ -e "$x/boot/vmlinuz-$rel" ] || die "$deb: no kernel image or module tree"
	# The package carries no modules.dep.
	depmod -b "$x" "$rel"
	mods=()
	for m in "${MODULE_DIRS[@]}"; do
		# A path names a directory or one module (compressed or not).
		while IFS= read -r f; do
			f="${f##*/}"
			mods+=("${f%%.ko*}")
		done < <(find "$x/lib/modules/$rel/kernel" \( -path "*/kernel/$m/*" -o -path "*/kernel/$m" -o -path "*/kernel/$m.*" \) -name '*.ko*')
	done
	mkdir -p "$dir/modules/lib/modules/$rel"
	# Every module with its dependencies, as modprobe would load them.
	modprobe -d "$x" -S "$rel" --show-depends -a "${mods[@]}" 2>/dev/null |
		awk '$1 == "insmod" {print $2}' | sort -u |
		while IFS= read -r f; do
			rp="${f#"$x"/lib/modules/"$rel"/}"
			mkdir -p "$dir/modules/lib/modules/$rel/$(dirname "$rp")"
			case "$f" in
			*.ko.xz) xz -dc "$f" >"$dir/modules/lib/modules/$rel/${rp%.xz}" ;;
			*.ko.zst) zstd -qdc "$f" >"$dir/modules/lib/modules/$rel/${rp%.zst}" ;;
			*.ko.gz) gzip -dc "$f" >"$dir/modules/lib/modules/$rel/${rp%.gz}" ;;
			*) cp "$f" "$dir/modules/lib/modules/$rel/$rp" ;;
			esac
		done
	cp "$x/lib/modules/$rel/modules.builtin" "$x/lib/modules/$rel/modules.order" "$dir/modules/lib/modules/$rel/"
	[ -e "$x/lib/modules/$rel/modules.builtin.modinfo" ] &&
		cp "$x/lib/modules/$rel/modules.builtin.modinfo" "$dir/modules/lib/modules/$rel/"
	depmod -b "$dir/modules" "$rel"
	# Every preloaded module this kernel has must be in the selection.
	for m in "${PRELOAD_MODULES[@]}"; do
		modprobe -d "$x" -S "$rel" --show-depends "$m" >/dev/null 2>&1 || continue
		modprobe -d "$dir/modules" -S "$rel" --show-depends "$m" >/dev/null 2>&1 ||
			die "$pkg: module $m is in the package but not in the initramfs (MODULE_DIRS)"
	done
	cp "$x/boot/vmlinuz-$rel" "$dir/vmlinuz"
	cp "$x/boot/config-$rel" "$dir/config"
	echo "$rel" >"$dir/release"
	echo "$pkg $pkgver" >"$dir/package"
	rm -rf "$x"
}

# test_packages prints the repository's packages (relative directories)
# that have kernel tests.
test_packages() {
	(cd "$REPO_DIR" && grep -rl --include='*_test.go' '^func TestPrivileged' . |
		xargs -r -n1 dirname | sed 's|^\./||' | sort -u)
}

# build_payload DIR [no-tests] builds a static ctguard and (unless told
# no-tests) one test binary per package with kernel tests into DIR
# (usr/local/bin, usr/local/lib/ctguard-tests).
build_payload() {
	local dir=$1 tests=${2:-tests} p name
	export PATH="/usr/local/go/bin:$PATH"
	rm -rf "$dir"
	mkdir -p "$dir/usr/local/bin" "$dir/usr/local/lib/ctguard-tests"
	if [ "$tests" = no-tests ]; then
		log "building a static ctguard"
	else
		log "building a static ctguard and the kernel-test binaries"
	fi
	(cd "$REPO_DIR" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' \
		-o "$dir/usr/local/bin/ctguard" ./cmd/ctguard) || die "go build failed"
	: >"$dir/usr/local/lib/ctguard-tests/index"
	[ "$tests" = no-tests ] && return 0
	while IFS= read -r p; do
		name="$(echo "$p" | tr / -).test"
		(cd "$REPO_DIR" && CGO_ENABLED=0 go test -c -trimpath -ldflags='-s -w' \
			-o "$dir/usr/local/lib/ctguard-tests/$name" "./$p") || die "go test -c ./$p failed"
		echo "$name $p" >>"$dir/usr/local/lib/ctguard-tests/index"
	done < <(test_packages)
	install -m 0755 "$KERNELS_DIR/guest/ctguard-kernel-tests" "$KERNELS_DIR/guest/go" "$dir/usr/local/bin/"
	# The tests read files beside them (testdata, examples): the sources,
	# without the VCS data, are the test binaries' working directories.
	mkdir -p "$dir/src"
	(cd "$REPO_DIR" && git ls-files -z --cached --others --exclude-standard 2>/dev/null ||
		find . -path ./.git -prune -o -type f -print0) |
		(cd "$REPO_DIR" && xargs -0 -r cp --parents -t "$dir/src" 2>/dev/null || true)
}

# copy_program STAGE PATH copies a host program and its shared libraries.
copy_program() {
	local stage=$1 prog=$2 lib
	mkdir -p "$stage$(dirname "$prog")"
	cp -L "$prog" "$stage$prog"
	while IFS= read -r lib; do
		[ -e "$stage$lib" ] && continue
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done < <(ldd "$prog" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib/ {print $1}')
}

# build_initramfs KDIR PAYLOAD OUT ARGV... writes the guest's initramfs:
# busybox, the host programs, the kernel's modules, the payload, and the
# command to run.
build_initramfs() {
	local kdir=$1 payload=$2 out=$3 stage prog a q applet
	shift 3
	stage="$(mktemp -d "${TMPDIR:-/tmp}/ctguard-kernels-stage.XXXXXX")"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/lib,lib64,etc,proc,sys,dev,tmp,run,root,var}
	ln -s usr/lib "$stage/lib"
	ln -s ../run "$stage/var/run"
	cp /bin/busybox "$stage/bin/busybox"
	for applet in $(/bin/busybox --list); do
		case "$applet" in
		busybox | wget | modprobe | insmod | rmmod | lsmod | depmod | modinfo) continue ;;
		esac
		ln -s busybox "$stage/bin/$applet"
	done
	for prog in "${HOST_PROGRAMS[@]}"; do
		a="$(command -v "$prog" || true)"
		[ -n "$a" ] || die "host program $prog not found"
		copy_program "$stage" "$(readlink -f "$a")"
		[ "$(readlink -f "$a")" = "$a" ] || { mkdir -p "$stage$(dirname "$a")"; ln -sf "$(readlink -f "$a")" "$stage$a"; }
	done
	for applet in modprobe insmod rmmod lsmod depmod modinfo; do
		ln -sf /usr/bin/kmod "$stage/sbin/$applet"
	done
	# The dynamic loader, where programs look for it.
	cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
	[ -d /usr/share/iproute2 ] && mkdir -p "$stage/usr/share" && cp -r /usr/share/iproute2 "$stage/usr/share/"
	cp /etc/protocols /etc/services "$stage/etc/" 2>/dev/null || true
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$stage/etc/nsswitch.conf"
	cp -a "$kdir/modules/lib/modules" "$stage/usr/lib/"
	cp -a "$payload/." "$stage/"
	install -m 0755 "$KERNELS_DIR/guest/init" "$stage/init"
	printf '%s\n' "${PRELOAD_MODULES[@]}" >"$stage/etc/ctguard-modules"
	# The conntrack table sized as on a host with memory to spare (the
	# default follows the guest's 1 GiB: 8192 entries on 6.1+), so tests that
	# load thousands of flows measure ctguard, not a full table.
	mkdir -p "$stage/etc/modprobe.d"
	echo "options nf_conntrack hashsize=$CONNTRACK_MAX" >"$stage/etc/modprobe.d/ctguard.conf"
	echo "$CONNTRACK_MAX" >"$stage/etc/ctguard-conntrack-max"
	# The command, one single-quoted word per argument.
	{
		printf 'set --'
		for a in "$@"; do
			q="${a//\'/\'\\\'\'}"
			printf " '%s'" "$q"
		done
		printf '\n'
	} >"$stage/etc/ctguard-command"
	(cd "$stage" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$out"
	rm -rf "$stage"
}

# boot KDIR INITRD TIMEOUT WORKDIR boots the kernel with the initramfs. The
# command's stdout and stderr come out on the second and third serial ports,
# its exit status on the fourth, the console log on the first
# (WORKDIR/console.log). Returns the command's exit status; 124 when the
# guest did not finish in TIMEOUT seconds, 125 when it ended without a status.
boot() {
	local kdir=$1 initrd=$2 timeout=$3 work=$4 rc status outpid errpid
	mkfifo "$work/stdout" "$work/stderr"
	: >"$work/status"
	cat "$work/stdout" &
	outpid=$!
	cat "$work/stderr" >&2 &
	errpid=$!
	rc=0
	timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
		-nodefaults -display none -no-reboot -nic none \
		-kernel "$kdir/vmlinuz" -initrd "$initrd" \
		-append "console=ttyS0 quiet loglevel=4 panic=-1 random.trust_cpu=on" \
		-serial "file:$work/console.log" \
		-chardev "file,id=out,path=$work/stdout" -serial chardev:out \
		-chardev "file,id=err,path=$work/stderr" -serial chardev:err \
		-serial "file:$work/status" </dev/null >"$work/qemu.log" 2>&1 || rc=$?
	# The readers end when QEMU closes the pipes; if it never opened them
	# (it failed to start), stop them.
	for _ in $(seq 50); do
		kill -0 "$outpid" 2>/dev/null || kill -0 "$errpid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$outpid" "$errpid" 2>/dev/null || true
	wait "$outpid" "$errpid" 2>/dev/null || true
	status="$(tr -dc '0-9\n' <"$work/status" | head -n1)"
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "hack/kernels: the guest did not finish within ${timeout}s; console log tail:" >&2
		tail -n 30 "$work/console.log" >&2
		return 124
	fi
	if [ -z "$status" ]; then
		echo "hack/kernels: the guest ended without an exit status (qemu exit $rc); console log tail:" >&2
		tail -n 30 "$work/console.log" "$work/qemu.log" >&2
		return 125
	fi
	return "$status"
}
