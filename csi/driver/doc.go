// Package driver implements skiff's CSI services (driver csi.skiff.io):
// Identity, Node and a small Controller that provisions a sub-directory
// of a volume per PersistentVolumeClaim.
//
// # Node: stage once per node, bind per pod
//
// NodeStageVolume asks the mounter (package csi/mounter, a separate
// long-lived process) to mount the volume on the staging path: a skiff
// client process of its own serves the FUSE mount there, showing the
// volume attribute subdir as its root, read-only when the attribute
// readOnly or a *_READER_ONLY access mode says so. NodePublishVolume
// bind-mounts the staging mount onto the pod's target path (read-only
// when asked: a bind remounted MS_RDONLY). The driver itself holds no
// state and no mount: it reads the mount table, so it can be killed,
// restarted or upgraded at any time without touching a mount. Its socket
// (Listen) is removed on shutdown only while it is still its own: in a
// DaemonSet update with surge the next pod's csi-node has bound the same
// path by then.
//
// Reference counting is the mount table's: the staging mount and its
// binds share one file system (device number). NodeUnstageVolume refuses
// with FailedPrecondition while binds of the staging mount remain, and
// the mounter stops the client only when the last publication is gone.
// NodeUnpublishVolume unmounts every mount on the target path (lazily if
// busy) and removes it; it succeeds when there is nothing to do.
//
// Secrets come in the CSI secret fields only (the node-stage secret for
// the node, the provisioner secret for the controller), with the keys of
// DESIGN.md §6: metaurl, passphrase, google-credentials.json. Every
// request is logged with the fields the CSI spec marks csi_secret
// replaced (stripSecrets, like csi-lib-utils' protosanitizer), and
// errors show META_URLs without their passwords.
//
// # Controller: a directory per PVC
//
// CreateVolume makes <root>/<name> (StorageClass parameter root, default
// the volume's root; name is the PV name the external-provisioner
// chooses) in the volume the provisioner secret's metaurl names, mode
// 0777, and records the requested capacity and the onDelete parameter in
// trusted.* extended attributes of the directory (XattrCapacity,
// XattrOnDelete), for quota enforcement when quotas land. It is
// idempotent by name: an existing directory is returned when its recorded
// capacity fits the request, AlreadyExists otherwise. The volume id is
// "<volume name>/<sub-directory>"; the volume context carries subdir (and
// the StorageClass's readOnly and options parameters) to NodeStageVolume.
// DeleteVolume removes the directory and everything in it unless it was
// created with onDelete=retain; ids it never made, and directories that
// are gone, are deleted already. The controller opens the volume for each
// call without a session and changes its metadata directly: it needs no
// FUSE and no privileges. Data of removed files is freed by the volume's
// background deletion (any client, or skiff gc).
//
// # Errors and concurrency
//
// Every RPC validates its arguments (InvalidArgument, OutOfRange for an
// impossible capacity range) and returns status errors with explicit
// codes; the interceptor turns any stray error into Internal. One
// operation per volume id (per name for CreateVolume) runs at a time: a
// second one in flight gets Aborted and the CO retries it.
package driver
