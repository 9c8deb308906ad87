/*
 * livedump capture dump-42: rendered from the capture spec; do not edit.
 * processes: ms-teams.exe
 * statuses: 0xC000000D
 */
#pragma D option quiet
#pragma D option destructive

int livedump_hits;

syscall::NtCreateFile:return,
syscall::NtOpenFile:return
/(tolower(execname) == "ms-teams.exe") && ((uint32_t)arg0 == 0xC000000D) && livedump_hits < 1/
{
	livedump_hits++;
	printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);
	printf("@@livedump ustack");
	ustack(20);
	printf("\n@@livedump kstack");
	stack();
	printf("\n@@livedump end %d\n", livedump_hits);
	lkd(2);
}

syscall::NtCreateFile:return,
syscall::NtOpenFile:return
/livedump_hits >= 1/
{
	exit(0);
}
