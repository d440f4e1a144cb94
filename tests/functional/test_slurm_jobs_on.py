"""``Slurm.jobs(nodes=...)`` lists only those nodes' jobs, on a real slurmctld.

22.05's ``squeue --json`` prints every job whatever the filters; the
node-filtered listing (preemption's, suspend's) reads ``squeue --nodelist``
in text form instead. Checked against the full JSON listing of the same
jobs: the same records, field by field.
"""

from vcluster.slurm import client


class Recording:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, env, timeout, stdin=None):
        self.calls.append(list(argv))
        return client.subprocess_runner(argv, env, timeout, stdin)


def test_jobs_on_nodes_match_the_full_listing(slurm_cluster, slurm_node):
    one, two = slurm_node(cpus=1), slurm_node(cpus=1)
    ids = [slurm_cluster.sbatch(wrap="sleep 120", nodelist=one, mem=50, name="a|b\tc"),
           slurm_cluster.sbatch(wrap="sleep 120", nodelist=two, mem=50, extra=["--array=3-4"]),
           slurm_cluster.sbatch(wrap="sleep 120", nodelist=one, mem=50)]  # pending behind the first
    try:
        slurm_cluster.wait_job(ids[0], ("RUNNING",))
        runner = Recording()
        slurm = client.Slurm(conf=slurm_cluster.conf, runner=runner)
        full = {j.id: j for j in slurm.jobs()}
        on_one = slurm.jobs(nodes=[one])
        squeue = [c for c in runner.calls if c[0] == "squeue"]
        assert squeue[-1][:4] == ["squeue", "--noheader", "--all", "--states=all"]
        assert f"--nodelist={one}" in squeue[-1] and "--json" not in squeue[-1]
        assert [j.id for j in on_one] == [ids[0]]
        assert on_one[0] == full[ids[0]]
        assert on_one[0].name == "a|b\tc"
        on_two = slurm.jobs(nodes=[two])
        running_task = next(j for j in full.values() if j.array_job_id == ids[1] and j.nodes == [two])
        assert on_two == [running_task]
        assert {j.id for j in slurm.jobs(nodes=[one, two])} == {ids[0], running_task.id}
        # a name slurmctld does not know: the whole listing, picked here
        assert [j.id for j in slurm.jobs(nodes=[one, "nosuchnode"])] == [ids[0]]
        assert slurm.jobs(nodes=[one], states="PENDING") == []
    finally:
        for job in ids:
            slurm_cluster.run("scancel", str(job), check=False)
