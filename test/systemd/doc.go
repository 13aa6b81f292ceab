// Package systemd tests the units of systemd/ under a real systemd (252, as
// PID 1 of a systemd-nspawn container that systemd-container.sh boots), as
// an operator drives them: systemctl start, reload, kill -s USR2, stop, and
// journalctl. The binaries are built on the host (static), bound into the
// container read-only at /opt/procswitch/bin, and the load runs inside the
// container (loadclient), which has a network namespace of its own.
//
// The tests need root and Linux; the first run builds a Debian root
// filesystem (debootstrap, about 40 s; the script installs
// systemd-container and debootstrap when they are missing) and keeps it in
// /var/tmp/procswitch-sysd. Without root, on another OS, or with
// SUPERVISOR_SKIP_SYSTEMD=1 they skip, saying why. A container that does
// not boot as root is a failure.
package systemd
