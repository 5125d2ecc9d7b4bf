// Package mounter is the long-lived half of skiff-csi's node plugin: it
// runs one skiff client process per staged volume and keeps it (and so
// the FUSE connection) alive while the stateless gRPC half, csi-node,
// comes and goes.
//
// # Processes
//
// Each staged volume is served by a child process: `skiff mount
// --supervise` (Config.Supervise, the default) or plain `skiff mount`.
// Under --supervise the child is the small supervisor of
// fsclient/fuse/supervisor: it holds /dev/fuse and restarts the worker
// that serves the file system when the worker dies, on the same
// connection, so the staging mount and every bind of it (the pods'
// target paths) never see ENOTCONN. Without the supervisor, a crashed
// child leaves a dead mount: the mounter detaches it and mounts again on
// the staging path (new publishes work; binds made from the dead mount
// stay dead until their pods restart).
//
// The FUSE file system is mounted directly on the staging path (the
// kubelet's globalmount directory, an empty directory on the node), so
// the staging path is a fuse.skiff mount, and csi-node bind-mounts it
// (or rather the sub-directory the volume names, mounted as the root of
// the file system with --subdir) into each pod's target path.
//
// A child that exits without being asked to is started again with
// backoff (0.5 s doubling to 30 s); an Unstage stops it with SIGTERM
// (the client flushes written data, then unmounts) and, after
// Config.StopTimeout, SIGKILL and a lazy unmount. Children get SIGKILL
// as their parent-death signal: a mounter that dies (a crash, its
// container restarted) takes its mounts along, as a container restart
// would anyway: pods using them see ENOTCONN until they are restarted.
// Only a planned replacement keeps them, through the hand-off.
//
// # Hand-off: a new mounter takes every mount over
//
// With Config.HandOffDir (a directory on the node, shared by the old and
// the new mounter pod), every child runs with --handoff-socket
// HandOffDir/vol-<hash of the staging path>.sock and the mounter serves
// a hand-off API on HandOffDir/mounter.sock. A new mounter calls Adopt
// before it serves: it asks the old one for its volumes (begin: the old
// one then refuses Stage and Unstage with Unavailable), starts for each
// a child `skiff mount --supervise --adopt SOCKET`, whose supervisor takes
// the live FUSE connection from the old child's (package
// fsclient/fuse/supervisor: the old worker flushes, the descriptor and
// the relay state pass over the socket; applications see a stall), and
// waits until the old child exited 0 having handed it over; then it
// tells the old mounter the hand-off is over (end), and the old one's
// Serve returns nil without unmounting anything: its volume map is empty.
// A volume that could not be adopted stays with the old mounter (its
// child serves on) and Adopt fails; calling it again (the new mounter
// restarted) retries the volumes left. The request of each volume,
// secrets included, crosses the hand-off socket, which only root can
// use; the new mounter writes its own secret files, the old one removes
// its own. Sockets are removed on Close only while they are still the
// listener's own (csi/internal/sock), so the old pod's shutdown does not
// remove its successor's sockets.
//
// # API
//
// The mounter serves HTTP with JSON bodies on a unix socket (Serve); the
// socket lives in a directory only the node plugin's containers share.
// Client is csi-node's side. Requests:
//
//	POST /v1/stage    StageRequest  -> 200 Volume
//	POST /v1/unstage  UnstageRequest -> 200 {}
//	GET  /v1/volumes               -> 200 []Volume
//
// and on HandOffSocket, for the next mounter (handoff.go):
//
//	POST /v1/handoff/begin  POST /v1/handoff/wait  POST /v1/handoff/end
//
// Errors carry a gRPC code and a message ({"code":N,"message":"..."}),
// which Client turns back into a status error, so csi-node can return
// them as they are. Stage is idempotent (the same request for a volume
// already staged on that path returns at once; a different one is
// AlreadyExists), and a second Stage or Unstage of a path while one is in
// flight is Aborted.
//
// # Secrets
//
// A StageRequest carries the volume's META_URL, and may carry its
// passphrase and GCS credentials. All three are written to files readable
// only by root under Config.StateDir (a tmpfs in the pod) and passed by
// path (--meta-url-file, --passphrase-file, --google-credentials), never
// on a command line; they live while the volume is staged (a restarted
// child or supervised worker reads them again) and are removed on
// Unstage and when staging fails. Children run with --restricted unless
// Config.TrustInputs (volume.Config.Restricted). Logs show META_URLs
// redacted (package internal/redact), and a child's output quoted in an
// error or log has the request's secrets removed.
//
// # Locking
//
// Server.mu guards the map of volumes; it is never held while a child
// starts or stops. Each volume's busy flag (under mu) marks a Stage or
// Unstage in flight.
package mounter
