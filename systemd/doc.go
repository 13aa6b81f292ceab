// Package systemd holds the project's systemd units, to install as they are
// (see README.md in this directory): pathfind.service, the socket-activated
// pathfind-activated.socket and pathfind-activated.service, and
// gameserver.service. Its test checks them with systemd-analyze verify;
// test/systemd runs them under a real systemd.
package systemd
