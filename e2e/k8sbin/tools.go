//go:build tools

// Package k8sbin pins the Kubernetes and etcd versions whose binaries the
// e2e tests run (kube-apiserver, kube-controller-manager, etcd). It is its
// own module so that k8s.io/kubernetes and its replace directives never
// reach the main module. build.sh builds the binaries into a cache dir keyed
// by these versions.
package k8sbin

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
