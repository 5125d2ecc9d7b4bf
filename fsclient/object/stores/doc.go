// Package stores opens an object.Store from a bucket URL:
//
//	gs://BUCKET[/PREFIX]   Google Cloud Storage (package object/gcs)
//	file:///DIR            a local directory (package object/dir)
//	DIR                    a plain absolute or relative path: the same
//
// It is its own package, not a function in package object, because it
// imports every implementation and the implementations import object;
// keeping it apart also keeps the GCS SDK out of programs that only need
// the interface.
//
// A gs:// URL's path is a directory-like prefix: "gs://b/vol1" and
// "gs://b/vol1/" both store key K as object "vol1/K". Open checks that the
// bucket exists or the directory can be created, and reports a bad URL in
// one line that names the problem and the accepted forms.
//
// The returned Store may hold connections: close it with io.Closer when
// it implements that (Close does it for you).
package stores
