package main

import "github.com/spf13/cobra"

// addRestrictedFlag adds the hidden --restricted of skiff mount and its
// worker: the sidecar and the CSI mounter, which run as root with a pod
// author's Secret as input, pass it so that the mount accepts only what
// volume.Config.Restricted allows (Redis META_URLs, gs:// buckets,
// restricted GCS credentials).
func addRestrictedFlag(cmd *cobra.Command, restricted *bool) {
	cmd.Flags().BoolVar(restricted, "restricted", false, "accept only the inputs a privileged caller may take from a pod (Redis META_URLs, gs:// buckets, restricted GCS credentials)")
	cmd.Flags().MarkHidden("restricted")
}
