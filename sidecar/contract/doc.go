// Package contract is the pod contract between the skiff admission webhook,
// which writes it into pods, and the skiff sidecar, which reads it
// (DESIGN.md §6). It is a leaf package: it imports only the standard library,
// so both sides (and the CSI plugin) can use it without pulling in anything
// else.
//
// Guarantees:
//   - Every name, key, path and port of the contract is a constant or a pure
//     function here, and nowhere else; a change to the contract is a change to
//     this package (and to DESIGN.md §6).
//   - MarshalVolumes and ParseVolumes round-trip: for every []Volume v that
//     passes Validate, ParseVolumes(MarshalVolumes(v)) equals v. ParseVolumes
//     rejects unknown fields, duplicates and invalid entries, so a sidecar
//     never mounts from a half-understood SKIFF_VOLUMES.
//   - Kubernetes object names built here (PodVolumeName and friends) are
//     deterministic and always valid DNS labels (at most 63 characters):
//     names that would be longer are shortened with a hash suffix, so two
//     different inputs never share a name.
package contract
