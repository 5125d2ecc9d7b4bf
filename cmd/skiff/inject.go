package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/skiff-fs/skiff/webhook/offline"
	"github.com/skiff-fs/skiff/webhook/options"
)

// newInject is `skiff inject -f FILE|-`: the webhook's mutation, offline.
func newInject(g *globals) *cobra.Command {
	var file, pvFile string
	var opts offline.Options
	var injectOpts *options.Inject
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "inject the skiff sidecar into Kubernetes manifests, offline (as the webhook would)",
		Long: `inject reads YAML (multi-document; Pod, Deployment, StatefulSet, DaemonSet,
ReplicaSet, Job, CronJob) and writes it to stdout with the skiff sidecar
injected into every selected pod template that references a skiff volume,
exactly as skiff-webhook would mutate the pods (same flags, same defaults).
Pods are selected by the label skiff.io/inject=true, or all of them with
--namespace-enabled; skiff.io/inject=false opts out. Other documents are
written back unchanged. PersistentVolumeClaim references need --pv FILE with
the claims and their PersistentVolumes (and StorageClasses).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE (or - for stdin) is required")
			}
			cfg, err := injectOpts.Config()
			if err != nil {
				return err
			}
			opts.Config = cfg
			if pvFile != "" {
				f, err := os.Open(pvFile)
				if err != nil {
					return err
				}
				defer f.Close()
				if opts.Objects, err = offline.ReadObjects(f); err != nil {
					return fmt.Errorf("--pv %s: %w", pvFile, err)
				}
			}
			var in io.Reader = cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			g.logger().Debug("inject", "file", file, "pv", pvFile, "image", cfg.Image)
			return offline.Transform(in, cmd.OutOrStdout(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "YAML file to read, - for stdin")
	f.StringVar(&pvFile, "pv", "", "YAML file with the PersistentVolumeClaims, PersistentVolumes and StorageClasses that claim references resolve to")
	f.StringVarP(&opts.Namespace, "namespace", "n", "default", "namespace of objects that name none")
	f.BoolVar(&opts.NamespaceEnabled, "namespace-enabled", false, "treat the namespace as labelled skiff.io/inject=enabled (select every pod not opted out)")
	injectOpts = options.Bind(f)
	return cmd
}
