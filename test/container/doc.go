// Package container tests the supervisor as PID 1 of a container, as the
// Containerfile at the repository root runs it.
//
// Podman and buildah do not run on the test machines, so the image is not
// built here. Instead the tests build the image's root filesystem the way
// the Containerfile does (the same static binaries, built with the same
// flags, at the same paths; the COPY --from=build, ENV, VOLUME, ENTRYPOINT
// and CMD lines are read from the Containerfile itself) and run it with
// systemd-nspawn, without --boot, so that the image's command is the
// container's PID 1. The container shares the host's network, so the
// clients (package loadgen, which never retries) reach pathfind on
// loopback; the only change made to the image's command line is that the
// listening addresses become 127.0.0.1:0. The volume for new builds is a
// host directory bound at the image's VOLUME, filled with the image's
// files as podman fills a new named volume.
//
// What the tests check, with the supervisor as PID 1:
//   - TestUpgradeUnderLoad: a new build copied into the volume and SIGHUP
//     (sent to the container's PID 1 from the host), then `supervisor ctl
//     upgrade --wait` run inside the container as `kubectl exec` would,
//     each give a new generation with no failed request;
//   - TestStopDrains: SIGTERM fails /readyz at once, requests keep being
//     served for --stop-delay, requests in flight when the drain begins
//     complete, and the container exits 0 within the grace period that
//     deploy/kubernetes allows;
//   - TestReapsOrphansAsPID1: a worker's child that outlives the worker is
//     adopted by PID 1 and reaped: no zombie is left in the namespace. It
//     runs the supervisor as PID 1 of `unshare --pid --fork --mount-proc`
//     on the host, with the test binary as its worker, which a static
//     container could not run;
//   - TestGracePeriodCoversStop: the Deployment's
//     terminationGracePeriodSeconds is above the image's --stop-delay plus
//     --drain-timeout.
//
// The tests need root and Linux, systemd-nspawn (Debian's systemd-container
// package) and unshare (util-linux). Without them, or with
// SUPERVISOR_SKIP_CONTAINER=1, they skip, saying why.
package container
