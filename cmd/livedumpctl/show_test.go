package main
import ("testing";"fmt")
func TestShow(t *testing.T) {
	tc := startController(t)
	for _, a := range [][]string{{"agents","list"},{"-o","json","agents","list","-l","role=vdi"},{"tokens","create","--uses","5","--labels","site=ams"},{"tokens","list"},{"audit","list"},{"-o","json","tokens","create"},{"--ca",newPKI(t).caFile,"agents","list"},{"--timeout","100ms","agents","list","--controller","10.255.255.1:7443"}} {
		code, o, e := runCLI(t, a...)
		fmt.Printf("$ livedumpctl %v  (exit %d)\n%s%s\n", a, code, o, e)
	}
	tc.fake.setErr(fmt.Errorf("boom"))
	_, _, e := runCLI(t, "agents", "list"); fmt.Print(e)
}
