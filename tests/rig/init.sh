#!/bin/busybox sh
# PID 1 of the L1 guest: load the modules, build a writable root (the host's / over 9p, read-only, under an overlay
# whose upper layer is the scratch disk), mount the job folder read-write at its host path, run the job's run.sh
# chrooted there, write its exit status, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
  insmod "/lib/modules/$m" || echo "rig: insmod $m failed"
done
job=$(sed -n 's/.*rig\.job=\([^ ]*\).*/\1/p' /proc/cmdline)
p9=trans=virtio,version=9p2000.L,msize=512000
fail() { echo "rig: $*"; poweroff -f; }
mount -t 9p -o "$p9,cache=loose,ro" host /host || fail "mounting the host's root failed"
mount -t ext4 /dev/vda /scratch || fail "mounting the scratch disk failed"
mkdir -p /scratch/upper /scratch/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/scratch/upper,workdir=/scratch/work /newroot \
  || fail "the overlay root failed"
mount -t 9p -o "$p9" job "/newroot$job" || fail "mounting the job folder failed"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup  # the namespace backend's limits are tested here (the host has v1)
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
ip link set lo up
hostname msb-rig-l1  # not the host's name: what L1 records in a shared home is never taken for the host's
echo "rig: running $job/run.sh"
# what L1 is doing, every 20 s, for whoever reads the job folder while it runs
(while sleep 20; do { cat /proc/uptime /proc/loadavg; ps -o pid,ppid,stat,rss,args; } > "/newroot$job/l1-ps.tmp" 2>&1
  mv "/newroot$job/l1-ps.tmp" "/newroot$job/l1-ps.txt"; done) &
# The new root becomes its mount namespace's root (as switch_root does), not a chroot: the kernel refuses user
# namespaces to a chrooted process, and the namespace backend's tests make them.
unshare -m sh -c 'cd /newroot && mount --move . / && exec chroot . /bin/sh "$0/run.sh"' "$job" \
  > "/newroot$job/output" 2>&1
echo $? > "/newroot$job/status"
sync
poweroff -f
