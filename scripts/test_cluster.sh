#!/usr/bin/env bash
# A real Slurm cluster with accounting (one node, plus two loopback slurmd for multi-node jobs) and an
# sshd on 127.0.0.1, for the integration tests.
#
#   sudo scripts/test_cluster.sh up       # install (Debian packages) and start everything; idempotent
#   sudo scripts/test_cluster.sh status   # what runs
#   sudo scripts/test_cluster.sh down     # stop every daemon it started
#
# Daemons: munged, mariadbd, slurmdbd, slurmctld, slurmd (partition "publicgpu"; two more slurmd
# as nodes n1 and n2 of partition "multinode", on loopback ports 17001-17002), and sshd on
# 127.0.0.1:$HPCTRAIN_TEST_SSH_PORT (2222) for the non-root user $HPCTRAIN_TEST_USER (hpcuser), whose
# home is the "cluster home". The client's key and a known_hosts holding the host key are written to
# $STATE/client/; $STATE/env has the values tests read. The jobs' kraken lives in a venv
# ($HPCTRAIN_TEST_KRAKEN_VENV, /opt/hpctrain-test-kraken), as a site's `module load kraken` would give it.
# A small tmpfs ($HPCTRAIN_TEST_QUOTA_SIZE, 64 MB) owned by the test user is mounted at ~/quota: a
# filesystem that fills up, for tests/integration/test_quota_fs.py. Needs root and no systemd. Loopback only.
# Two more sshd take a password only (2223) and a password then a TOTP code through PAM (2224); the
# password and the TOTP secret are written, root-only, to $STATE/client/. Lmod gives the jobs
# `module load kraken/4.3.13` (the default) and `kraken/7.1.1`, each a venv of its own.
set -euo pipefail

STATE="${HPCTRAIN_TEST_CLUSTER:-/var/lib/hpctrain-test-cluster}"
CLUSTER_USER="${HPCTRAIN_TEST_USER:-hpcuser}"
SSH_PORT="${HPCTRAIN_TEST_SSH_PORT:-2222}"
# Two more sshd on loopback, as the guide's users log in: a password only (2223), and a password
# then a one-time code (TOTP) through PAM (2224).
PW_SSH_PORT="${HPCTRAIN_TEST_PW_SSH_PORT:-2223}"
OTP_SSH_PORT="${HPCTRAIN_TEST_OTP_SSH_PORT:-2224}"
KRAKEN_VENV="${HPCTRAIN_TEST_KRAKEN_VENV:-/opt/hpctrain-test-kraken}"
# kraken 4.3.13, the guide's cluster's `module load kraken`, in a venv of its own (it cannot share
# one with torch 2.13); Lmod modulefiles kraken/4.3.13 (the default) and kraken/7.1.1 load them.
KRAKEN4_VENV="${HPCTRAIN_TEST_KRAKEN4_VENV:-/opt/hpctrain-test-kraken-4.3.13}"
MODULEFILES=/etc/lmod/modules
QUOTA_SIZE="${HPCTRAIN_TEST_QUOTA_SIZE:-64m}"
MULTI_NODES="n[1-2]"
# chromium: the headless browser that opens `report --html` (tests/integration/test_report_browser.py)
# lmod: the module system (`module load kraken/4.3.13`), as HPC sites have it
PACKAGES=(slurm-wlm slurmdbd munge openssh-server mariadb-server rsync procps sshfs chromium lmod
          libpam-google-authenticator oathtool)
# The second login node's view of the cluster home: the same home through a network filesystem.
GLOGIN="${HPCTRAIN_TEST_GLOGIN:-/mnt/hpc-glogin}"
DB_PASSWORD_FILE="$STATE/db-password"

log() { printf '== %s\n' "$*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "test cluster: $what did not come up in time" >&2
            return 1
        fi
        sleep 0.5
    done
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

make_user() {
    id "$CLUSTER_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$CLUSTER_USER"
    local home
    home="$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
    mkdir -p "$STATE/client" "$home/.ssh"
    chmod 755 "$STATE" "$STATE/client"
    [ -f "$STATE/client/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C hpctrain-test -f "$STATE/client/id_ed25519"
    cp "$STATE/client/id_ed25519.pub" "$home/.ssh/authorized_keys"
    chown -R "$CLUSTER_USER:" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/.ssh/authorized_keys"
}

start_munge() {
    mkdir -p /run/munge && chown munge:munge /run/munge
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged --force"
    wait_for 20 munge sh -c "munge -n | unmunge"
}

start_mariadb() {
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
        (mysqld_safe --bind-address=127.0.0.1 --skip-networking=0 >/dev/null 2>&1 &)
    fi
    wait_for 60 mariadb mysqladmin ping
    [ -f "$DB_PASSWORD_FILE" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DB_PASSWORD_FILE")
    local password
    password="$(cat "$DB_PASSWORD_FILE")"
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
              ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

write_slurm_conf() {
    local host cpus memory
    host="$(hostname -s)"
    cpus="$(nproc)"
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd" "$STATE/log"
    SLURM_CONF_BEFORE="$(cat /etc/slurm/slurm.conf 2>/dev/null || true)"
    cat > /etc/slurm/slurm.conf <<EOF
ClusterName=hpctrain
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd.%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
SlurmUser=root
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MpiDefault=none
MinJobAge=60
KillWait=5
# A node that stops answering is declared DOWN after 20 s (default 300), for the node-death test.
SlurmdTimeout=20
NodeName=$host CPUs=$cpus RealMemory=$memory Features=avx2,bigmem State=UNKNOWN
# The guide's GPU partition has a time limit, as real ones do (preflight checks it).
PartitionName=publicgpu Nodes=$host Default=YES MaxTime=24:00:00 State=UP
# Two more slurmd on this machine, each on its own loopback port, for real multi-node jobs.
NodeName=$MULTI_NODES NodeHostname=$host NodeAddr=127.0.0.1 Port=17001-17002 CPUs=1 RealMemory=2000 Features=avx2 State=UNKNOWN
PartitionName=multinode Nodes=$MULTI_NODES MaxTime=INFINITE State=UP
# A CPU partition (compile off the GPU) and one the test user may not use (preflight).
PartitionName=cpu Nodes=$MULTI_NODES MaxTime=04:00:00 State=UP
PartitionName=reserved Nodes=$MULTI_NODES AllowGroups=root MaxTime=01:00:00 State=UP
EOF
    (umask 077 && cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(cat "$DB_PASSWORD_FILE")
StorageLoc=slurm_acct_db
EOF
)
}

start_slurm() {
    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster hpctrain >/dev/null 2>&1 || true
    sacctmgr -i add account hpctrain Cluster=hpctrain >/dev/null 2>&1 || true
    sacctmgr -i add user "$CLUSTER_USER" Account=hpctrain >/dev/null 2>&1 || true
    if pgrep -x slurmctld >/dev/null; then
        # A slurm.conf changed under running daemons (new partitions, features): read it again.
        [ "$SLURM_CONF_BEFORE" = "$(cat /etc/slurm/slurm.conf)" ] || scontrol reconfigure
    else
        slurmctld
    fi
    wait_for 60 slurmctld scontrol ping
    pgrep -fx slurmd >/dev/null || slurmd
    for node in n1 n2; do
        pgrep -fx "slurmd -N $node" >/dev/null || slurmd -N "$node"
    done
    wait_for 60 "the slurm nodes" sh -c "[ \"\$(sinfo -h -N -o %T | grep -cE '^(idle|mixed|allocated)')\" -ge 3 ]"
}

start_sshd() {
    mkdir -p /run/sshd
    ssh-keygen -A >/dev/null
    if ! pgrep -f "sshd -p $SSH_PORT" >/dev/null; then
        /usr/sbin/sshd -p "$SSH_PORT" -o ListenAddress=127.0.0.1 -o PasswordAuthentication=no \
            -o KbdInteractiveAuthentication=no -o "AllowUsers=$CLUSTER_USER" -o PidFile="$STATE/sshd.pid"
    fi
    {
        for type in ed25519 ecdsa rsa; do
            [ -f "/etc/ssh/ssh_host_${type}_key.pub" ] || continue
            for port in "$SSH_PORT" "$PW_SSH_PORT" "$OTP_SSH_PORT"; do
                printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "/etc/ssh/ssh_host_${type}_key.pub")"
            done
        done
    } > "$STATE/client/known_hosts"
    chmod 644 "$STATE/client/known_hosts" "$STATE/client/id_ed25519.pub"
    wait_for 30 sshd ssh -p "$SSH_PORT" -i "$STATE/client/id_ed25519" -o BatchMode=yes \
        -o UserKnownHostsFile="$STATE/client/known_hosts" -o StrictHostKeyChecking=yes \
        "$CLUSTER_USER@127.0.0.1" true
}

# The password and the TOTP secret are the test user's, for the tests to type; root-only files.
make_login_secrets() {
    (umask 077
     [ -s "$STATE/client/password" ] || head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$STATE/client/password"
     [ -s "$STATE/client/totp-secret" ] || head -c 20 /dev/urandom | base32 | tr -d '=' > "$STATE/client/totp-secret")
    printf '%s:%s\n' "$CLUSTER_USER" "$(cat "$STATE/client/password")" | chpasswd
    local home
    home="$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
    # google-authenticator's file: the secret, TOTP, a window of 3 codes; reuse allowed, so that
    # two logins within one 30-second step both pass.
    rm -f "$home/.google_authenticator"
    printf '%s\n" TOTP_AUTH\n" WINDOW_SIZE 3\n' "$(cat "$STATE/client/totp-secret")" \
        > "$home/.google_authenticator"
    chown "$CLUSTER_USER:" "$home/.google_authenticator"
    chmod 400 "$home/.google_authenticator"
}

# sshd 9.2 has no PAMServiceName: its PAM service is the name it runs under, hence a link per service.
start_login_sshd() {  # start_login_sshd NAME PORT CONFIG-LINES...
    local name="$1" port="$2"
    shift 2
    printf '%s\n' "Port $port" "ListenAddress 127.0.0.1" "AllowUsers $CLUSTER_USER" "UsePAM yes" \
        "PermitRootLogin no" "PidFile $STATE/$name.pid" "Subsystem sftp /usr/lib/openssh/sftp-server" \
        /etc/ssh/ssh_host_{ed25519,ecdsa,rsa}_key "$@" | sed 's|^/etc/ssh/|HostKey /etc/ssh/|' \
        > "/etc/ssh/$name.conf"
    ln -sfn /usr/sbin/sshd "/usr/local/sbin/$name"
    "/usr/local/sbin/$name" -t -f "/etc/ssh/$name.conf"
    pgrep -f "sbin/$name -f" >/dev/null || "/usr/local/sbin/$name" -f "/etc/ssh/$name.conf"
    wait_for 30 "$name" sh -c "ssh -p $port -o BatchMode=yes -o PreferredAuthentications=none \
        -o UserKnownHostsFile=$STATE/client/known_hosts -o StrictHostKeyChecking=yes \
        $CLUSTER_USER@127.0.0.1 true 2>&1 | grep -q 'Permission denied'"
}

start_login_sshds() {
    make_login_secrets
    printf '%s\n' "auth required pam_unix.so" "@include common-account" "@include common-session" \
        > /etc/pam.d/hpctrain-sshd-pw
    printf '%s\n' "auth required pam_unix.so" "auth required pam_google_authenticator.so" \
        "@include common-account" "@include common-session" > /etc/pam.d/hpctrain-sshd-otp
    start_login_sshd hpctrain-sshd-pw "$PW_SSH_PORT" "PasswordAuthentication yes" \
        "KbdInteractiveAuthentication no" "PubkeyAuthentication no" "AuthenticationMethods password"
    start_login_sshd hpctrain-sshd-otp "$OTP_SSH_PORT" "PasswordAuthentication no" \
        "KbdInteractiveAuthentication yes" "PubkeyAuthentication no" \
        "AuthenticationMethods keyboard-interactive"
}

make_kraken_venv() {
    # The cluster's own kraken (what `module load kraken` gives on a real cluster), for the test user's jobs.
    if [ ! -x "$KRAKEN_VENV/bin/ketos" ]; then
        log "installing kraken for the cluster's jobs into $KRAKEN_VENV"
        /usr/bin/python3 -m venv "$KRAKEN_VENV"
        "$KRAKEN_VENV/bin/pip" install -q --disable-pip-version-check \
            -c "$(dirname "$0")/../constraints/test-machine.txt" "kraken>=7.1,<7.2" 2>&1 \
            | grep -v "^WARNING: Location" || true
    fi
    "$KRAKEN_VENV/bin/python" "$(dirname "$0")/dev_fix_torchvision.py" >/dev/null
    chmod -R a+rX "$KRAKEN_VENV"
}

make_kraken4_venv() {
    # kraken 4.3.13 as the guide's cluster runs it. Two pins make today's install run: pyarrow 14
    # (pyarrow >= 15 needs NumPy 2, kraken 4.3 pins numpy~=1.23) and rich 13.7 (rich 15 breaks
    # kraken 4.3's progress bar). About 10 minutes: torch 2.0.1 with CUDA packages (2.6 GB), and
    # scikit-image 0.19 built from source. A venv cannot be moved, so a marker says it is whole.
    if [ ! -f "$KRAKEN4_VENV/.hpctrain-complete" ]; then
        log "installing kraken 4.3.13 into $KRAKEN4_VENV (about 10 minutes, 2.6 GB download)"
        rm -rf "$KRAKEN4_VENV"
        /usr/bin/python3 -m venv "$KRAKEN4_VENV"
        "$KRAKEN4_VENV/bin/pip" install -q --disable-pip-version-check \
            kraken==4.3.13 pyarrow==14.0.2 rich==13.7.0 2>&1 | grep -v "^WARNING: Location" || true
        # `--augment` (projects' default) needs albumentations, kraken's `augment` extra: the 1.3
        # line still takes NumPy 1.23; the constraint keeps kraken's NumPy where it is.
        "$KRAKEN4_VENV/bin/python" -c 'import numpy; print("numpy==" + numpy.__version__)' \
            > "$KRAKEN4_VENV/numpy-pin.txt"
        "$KRAKEN4_VENV/bin/pip" install -q --disable-pip-version-check \
            -c "$KRAKEN4_VENV/numpy-pin.txt" albumentations==1.3.1 2>&1 | grep -v "^WARNING: Location" || true
        "$KRAKEN4_VENV/bin/python" -c 'import albumentations'
        "$KRAKEN4_VENV/bin/ketos" --version | grep -q '4\.3\.13'
        touch "$KRAKEN4_VENV/.hpctrain-complete"
    fi
    chmod -R a+rX "$KRAKEN4_VENV"
}

write_modulefiles() {
    # Lmod modulefiles for both krakens; `module load kraken` gives 4.3.13, as on the guide's cluster.
    local version venv
    mkdir -p "$MODULEFILES/kraken"
    for version in 4.3.13 7.1.1; do
        venv="$KRAKEN4_VENV"
        [ "$version" = 7.1.1 ] && venv="$KRAKEN_VENV"
        printf '%s\n' "whatis(\"kraken $version: OCR/HTR training (ketos), in $venv\")" \
            'family("kraken")' "prepend_path(\"PATH\", \"$venv/bin\")" \
            > "$MODULEFILES/kraken/$version.lua"
    done
    ln -sfn 4.3.13.lua "$MODULEFILES/kraken/default"
    chmod -R a+rX "$MODULEFILES"
}

# A second login node ("hpc-glogin") reaches the users' home through a network filesystem, as
# real sites share homes over NFS or GPFS: sshfs (FUSE) of the same home, with its default
# attribute and directory caches, and allow_other so that hpcuser's processes can use it.
# A FUSE mount whose sshfs died with an earlier machine (a restart, a killed sshd) answers
# "Transport endpoint is not connected" to everything, mkdir included: detach it first.
unmount_stale() {
    stat "$1" >/dev/null 2>&1 && return
    grep -qs " $1 " /proc/mounts || return 0
    fusermount3 -uz "$1" 2>/dev/null || fusermount -uz "$1" 2>/dev/null || umount -l "$1"
}

mount_second_login() {
    local home
    home="$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
    unmount_stale "$GLOGIN"
    mkdir -p "$GLOGIN"
    mountpoint -q "$GLOGIN" && return
    sshfs -p "$SSH_PORT" -o IdentityFile="$STATE/client/id_ed25519" \
        -o UserKnownHostsFile="$STATE/client/known_hosts" -o StrictHostKeyChecking=yes \
        -o allow_other,reconnect,ServerAliveInterval=15 \
        "$CLUSTER_USER@127.0.0.1:$home" "$GLOGIN"
}

quota_dir() {
    printf '%s/quota' "$(getent passwd "$CLUSTER_USER" | cut -d: -f6)"
}

mount_quota_fs() {
    # A filesystem that fills up: a tmpfs of $QUOTA_SIZE in the test user's home, theirs.
    local dir
    dir="$(quota_dir)"
    mkdir -p "$dir"
    if ! mountpoint -q "$dir"; then
        mount -t tmpfs -o "size=$QUOTA_SIZE,mode=0755" hpctrain-quota "$dir"
    fi
    # Test scratch only: what an interrupted run left there would fill it before the tests start.
    find "$dir" -mindepth 1 -maxdepth 1 -name 'hpctrain-quota-*' -exec rm -rf {} +
    chown "$CLUSTER_USER:" "$dir"
}

write_env() {
    cat > "$STATE/env" <<EOF
HPCTRAIN_TEST_HOST=127.0.0.1
HPCTRAIN_TEST_SSH_PORT=$SSH_PORT
HPCTRAIN_TEST_PW_SSH_PORT=$PW_SSH_PORT
HPCTRAIN_TEST_OTP_SSH_PORT=$OTP_SSH_PORT
HPCTRAIN_TEST_PASSWORD_FILE=$STATE/client/password
HPCTRAIN_TEST_TOTP_SECRET_FILE=$STATE/client/totp-secret
HPCTRAIN_TEST_USER=$CLUSTER_USER
HPCTRAIN_TEST_HOME=$(getent passwd "$CLUSTER_USER" | cut -d: -f6)
HPCTRAIN_TEST_KEY=$STATE/client/id_ed25519
HPCTRAIN_TEST_KNOWN_HOSTS=$STATE/client/known_hosts
HPCTRAIN_TEST_KRAKEN_VENV=$KRAKEN_VENV
HPCTRAIN_TEST_KRAKEN4_VENV=$KRAKEN4_VENV
HPCTRAIN_TEST_GLOGIN=$GLOGIN
HPCTRAIN_TEST_QUOTA=$(quota_dir)
EOF
    chmod 644 "$STATE/env"
}

up() {
    [ "$(id -u)" = 0 ] || { echo "test cluster: run as root" >&2; exit 1; }
    mkdir -p "$STATE"
    install_packages
    make_user
    start_munge
    start_mariadb
    write_slurm_conf
    start_slurm
    start_sshd
    start_login_sshds
    mount_second_login
    make_kraken_venv
    make_kraken4_venv
    write_modulefiles
    mount_quota_fs
    write_env
    log "test cluster up: $(sinfo -h -o '%P %T %D node(s) %c CPUs' | paste -sd ',') | ssh $CLUSTER_USER@127.0.0.1 -p $SSH_PORT"
}

down() {
    unmount_stale "$GLOGIN"
    mountpoint -q "$GLOGIN" && { fusermount3 -u "$GLOGIN" || umount -l "$GLOGIN"; }
    for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" || true; done
    for pid in "$STATE"/sshd.pid "$STATE"/hpctrain-sshd-{pw,otp}.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    mysqladmin shutdown 2>/dev/null || true
    pkill -x munged || true
    if id "$CLUSTER_USER" >/dev/null 2>&1 && mountpoint -q "$(quota_dir)"; then
        umount "$(quota_dir)" || umount -l "$(quota_dir)"
    fi
    # Gone for real before returning, so that an `up` right after starts fresh daemons.
    wait_for 30 "the daemons' exit" sh -c '! pgrep -x "slurmd|slurmctld|slurmdbd|munged|mariadbd"'
    log "test cluster stopped"
}

status() {
    for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
        printf '%-10s %s\n' "$daemon" "$(pgrep -x "$daemon" >/dev/null && echo running || echo stopped)"
    done
    printf '%-10s %s\n' sshd "$(pgrep -f "sshd -p $SSH_PORT" >/dev/null && echo running || echo stopped)"
    for name in hpctrain-sshd-pw hpctrain-sshd-otp; do
        printf '%-10s %s\n' "${name#hpctrain-}" "$(pgrep -f "sbin/$name -f" >/dev/null && echo running || echo stopped)"
    done
    if id "$CLUSTER_USER" >/dev/null 2>&1 && mountpoint -q "$(quota_dir)"; then
        printf '%-10s %s\n' quota "$(df -h --output=used,size "$(quota_dir)" | tail -1 | xargs) at $(quota_dir)"
    else
        printf '%-10s %s\n' quota "not mounted"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
