package sidecar

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func TestSupervisedArgs(t *testing.T) {
	s := &Spec{MetaURL: "redis://:s3cret@redis:6379/1", MetaURLFile: "/etc/skiff/secrets/data/metaurl", BufferSize: 64 << 20}
	s.Name, s.MountPath = "data", "/run/skiff/stage/data"
	m := Supervised{Binary: "skiff", WorkerBinary: "/shared/skiff", RunDir: "/run/skiff/stage"}
	args, err := m.Args(s)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	if strings.Contains(line, "s3cret") || strings.Contains(line, "redis://") {
		t.Errorf("the command line shows the META_URL: %s", line)
	}
	for _, want := range []string{
		"--meta-url-file=/etc/skiff/secrets/data/metaurl",
		"--worker-binary=/shared/skiff",
		"--status-file=/run/skiff/stage/data.status",
		"--metrics-socket=/run/skiff/stage/data.metrics",
		"--restricted",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args lack %s: %s", want, line)
		}
	}
	if args[len(args)-1] != s.MountPath {
		t.Errorf("the last argument is %q, want the mount path", args[len(args)-1])
	}

	if line, _ := (Supervised{Binary: "skiff", TrustInputs: true}).Args(s); strings.Contains(strings.Join(line, " "), "--restricted") {
		t.Errorf("TrustInputs args hold --restricted: %s", line)
	}

	noFile := *s
	noFile.MetaURLFile = ""
	if _, err := m.Args(&noFile); err == nil || !strings.Contains(err.Error(), "metaurl file") {
		t.Errorf("args without a META_URL file: %v", err)
	}
	long := m
	long.RunDir = "/" + strings.Repeat("x", 110)
	if _, err := long.Args(s); err == nil || !strings.Contains(err.Error(), "--stage-dir") {
		t.Errorf("args with a too long socket path: %v", err)
	}
}

func TestMergeWorkerFamilies(t *testing.T) {
	counter := dto.MetricType_COUNTER
	gauge := dto.MetricType_GAUGE
	lp := func(k, v string) *dto.LabelPair { return &dto.LabelPair{Name: proto.String(k), Value: proto.String(v)} }
	worker := func(v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String("skiff_object_requests_total"), Help: proto.String("h"), Type: &counter,
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{lp("op", "put"), lp("volume", "spoofed")}, Counter: &dto.Counter{Value: proto.Float64(v)}}}}
	}
	byName := map[string]*dto.MetricFamily{}
	if err := merge(byName, worker(1), "a"); err != nil {
		t.Fatal(err)
	}
	if err := merge(byName, worker(2), "b"); err != nil {
		t.Fatal(err)
	}
	mf := byName["skiff_object_requests_total"]
	var got [][]string
	for _, m := range mf.Metric {
		var l []string
		for _, p := range m.Label {
			l = append(l, p.GetName()+"="+p.GetValue())
		}
		got = append(got, l)
	}
	if d := cmp.Diff([][]string{{"op=put", "volume=a"}, {"op=put", "volume=b"}}, got); d != "" {
		t.Errorf("labels (-want +got):\n%s", d)
	}
	clash := &dto.MetricFamily{Name: proto.String("skiff_object_requests_total"), Type: &gauge,
		Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}}
	if err := merge(byName, clash, "c"); err == nil {
		t.Errorf("a family of another type was merged")
	}
	if n := len(byName["skiff_object_requests_total"].Metric); n != 2 {
		t.Errorf("%d metrics after a refused merge", n)
	}
}
